"""WSGI entry point for gunicorn: `gunicorn -c api/gunicorn_conf.py api.wsgi:app`."""

from api import create_app
from images_service.config.settings import load_settings
from images_service.logs import configure_logging

settings = load_settings()
configure_logging(settings.log_level, json_lines=not settings.is_development)
app = create_app(settings)
