"""start_server.sh runs `python init_db.py` before uWSGI; the floors have no database."""
