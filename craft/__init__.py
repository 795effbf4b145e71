"""`craft`, the project's console: thin commands over the library."""
