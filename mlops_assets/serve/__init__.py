"""The online model service: the champion behind an HTTP API, scoring like batch does."""
