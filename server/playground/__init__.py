"""The playground: a chat page served at GET /playground that talks to this server's own OpenAI API from the
browser (static files in static/, plain HTML, CSS and JavaScript: no build step, nothing fetched from
elsewhere). routes.py serves the files and GET / for browsers."""
