"""The application's own service providers."""
