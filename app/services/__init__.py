"""The application's services."""
