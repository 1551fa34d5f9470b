import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visualshop.settings")

app = Celery("visualshop")
# Every Celery setting lives in Django's settings with a CELERY_ prefix (cookiecutter-django).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
