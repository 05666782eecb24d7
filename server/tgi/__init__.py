"""TGI's native API: POST /, /generate, /generate_stream, /tokenize (TGI shape), GET /info."""
