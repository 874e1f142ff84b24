"""start_server.sh runs `python init_db.py` before uWSGI; the ceiling has no database."""
