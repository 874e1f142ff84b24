from thoughts_backend import create_app

application = create_app()
