"""VisualShop settings: everything that differs between machines comes from the environment.

The defaults are the embedded quick start (SQLite, Celery tasks run in-process, files under
./media). Production sets at least DJANGO_SECRET_KEY, DJANGO_DEBUG=0, DJANGO_ALLOWED_HOSTS,
DATABASE_URL and CELERY_BROKER_URL; see the README's configuration table.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEV_SECRET_KEY = "django-insecure-visualshop-development-only"

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The development key is refused by `check --deploy` (security.W009): production sets its own.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "catalog",
    "search",
    "ranking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "visualshop.urls"
WSGI_APPLICATION = "visualshop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
MEDIA_URL = env.str("MEDIA_URL", default="/media/")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
# Uploads above this are refused before they reach the image decoder.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=25 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Security: safe by default outside DEBUG, so that `manage.py check --deploy` is clean.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Celery. Without a broker the tasks run in-process (the embedded quick start).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
# A task is acknowledged after it ran, so a killed worker's task goes to another worker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"


REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 24,
    "EXCEPTION_HANDLER": "visualshop.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "search_anon": env.str("VISUALSHOP_SEARCH_ANON_RATE", default="30/min"),
        "search_user": env.str("VISUALSHOP_SEARCH_USER_RATE", default="600/min"),
        "clicks": env.str("VISUALSHOP_CLICKS_RATE", default="600/min"),
    },
}
# Throttle counters live in the cache: Redis in production so that all web processes share them.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
SPECTACULAR_SETTINGS = {
    "TITLE": "VisualShop API",
    "DESCRIPTION": "Photo search over the catalog and partner catalog management.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# The catalog.
DEFAULT_CURRENCY = env.str("VISUALSHOP_DEFAULT_CURRENCY", default="EUR")
IMAGE_MAX_BYTES = env.int("VISUALSHOP_IMAGE_MAX_BYTES", default=20 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("VISUALSHOP_IMAGE_MAX_PIXELS", default=50_000_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Review-photo cleaning (catalog/cleaning.py): the score is the best cosine similarity of the
# photo to its product's views (its images and its other review photos not rejected). Chosen
# with benchmarks/review_cleaning.py on the shared Grocery Store set for the pretrained
# MobileNetV2: 0.2% of genuine photos rejected, 1.5% of planted ones accepted (README).
REVIEW_ACCEPT_SCORE = env.float("VISUALSHOP_REVIEW_ACCEPT_SCORE", default=0.85)
REVIEW_REJECT_SCORE = env.float("VISUALSHOP_REVIEW_REJECT_SCORE", default=0.75)
REVIEW_SPOT_CHECK_FRACTION = env.float("VISUALSHOP_REVIEW_SPOT_CHECK_FRACTION", default=0.02)

# Stolen images and same-item groups (vision/nearcopy.py, search/integrity.py): a product
# image is a near-copy of another merchant's when its perceptual hash or mirrored hash is
# within COPY_MAX_HASH_DISTANCE bits of it, or its embedding or mirrored embedding reaches
# COPY_MIN_SIMILARITY (cosine; set for the pretrained MobileNetV2, recalibrate with a new
# embedder). Calibrated with benchmarks/stolen_images.py (README).
COPY_MAX_HASH_DISTANCE = env.int("VISUALSHOP_COPY_MAX_HASH_DISTANCE", default=11)
COPY_MIN_SIMILARITY = env.float("VISUALSHOP_COPY_MIN_SIMILARITY", default=0.82)
# The embedder the copy check compares with, whatever version serves search: the
# thresholds belong to it, and a fine-tuned search embedder pulls different photos of one
# product together, which is the opposite of telling a copy from a new photo.
# Default: VISUALSHOP_EMBEDDER (the pretrained base).
COPY_EMBEDDER = env.str("VISUALSHOP_COPY_EMBEDDER", default="")

# Search engine.
VISUALSHOP_EMBEDDER = env.str("VISUALSHOP_EMBEDDER", default="mobilenet_v2")
# Web processes look for a newer live index at most this often (seconds).
INDEX_RELOAD_SECONDS = env.float("VISUALSHOP_INDEX_RELOAD_SECONDS", default=2.0)
# Torch threads per worker process: one thread per process scales better on small machines
# (two threads stall when the other core is busy; shared/docs/MODELS.md).
TORCH_THREADS = env.int("VISUALSHOP_TORCH_THREADS", default=1)

# Saving an image enqueues its embedding; turned off only in unit tests that don't need it.
SEARCH_AUTO_INDEX = env.bool("VISUALSHOP_SEARCH_AUTO_INDEX", default=True)

# Queues: embedding is CPU-heavy and batched; index syncs are short and serialised.
CELERY_TASK_ROUTES = {
    "search.tasks.embed_*": {"queue": "embed"},
    "search.tasks.index_*": {"queue": "index"},
    "ranking.tasks.ranker_train_*": {"queue": "train"},
    "search.tasks.embedder_learn_*": {"queue": "train"},
}
# Fail fast when Redis is down: the upload succeeds and the sweep catches up later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE = {
    "embed-sweep": {"task": "search.tasks.embed_sweep_task", "schedule": env.float("VISUALSHOP_SWEEP_SECONDS", 60.0)},
    # The bound on how long a deactivated product can still be found: this interval plus
    # INDEX_RELOAD_SECONDS (a sync is also queued at once when a product changes).
    "index-sync": {
        "task": "search.tasks.index_sync_task",
        "schedule": env.float("VISUALSHOP_INDEX_SYNC_SECONDS", 30.0),
    },
    "query-photos-purge": {"task": "search.tasks.query_photos_purge_task", "schedule": 3600.0},
    "sessions-clear": {"task": "search.tasks.sessions_clear_task", "schedule": crontab(minute=15, hour=4)},
    # Weekly CTR retraining (Monday 03:30); the new version goes live only if it wins
    # offline (ranking/services.py).
    "ranker-train": {
        "task": "ranking.tasks.ranker_train_task",
        "schedule": crontab(minute=30, hour=3, day_of_week=1),
    },
    # Monthly embedder fine-tuning (the 1st, 02:00); it switches only if it is at least as
    # good on the held-out photos (search/training.py). The train queue's worker needs ~2 GB.
    "embedder-learn": {
        "task": "search.tasks.embedder_learn_task",
        "schedule": crontab(minute=0, hour=2, day_of_month=1),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(BASE_DIR / "celerybeat-schedule"))
# A task taken by a worker that dies unacknowledged goes back to the queue after this long
# (Redis transport). It must exceed the longest task plus its retry countdown (300 s max).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900)}
# Shoppers' query photos are deleted after this many days (the query rows stay).
SEARCH_PHOTO_RETENTION_DAYS = env.int("VISUALSHOP_SEARCH_PHOTO_RETENTION_DAYS", default=30)
SEARCH_DETECTOR = env.str("VISUALSHOP_SEARCH_DETECTOR", default="nanodet")
SEARCH_MAX_SIDE = env.int("VISUALSHOP_SEARCH_MAX_SIDE", default=1024)
SEARCH_NANODET_SIZE = env.int("VISUALSHOP_SEARCH_NANODET_SIZE", default=384)
SEARCH_PRODUCT_IMAGES = env.int("VISUALSHOP_SEARCH_PRODUCT_IMAGES", default=5)
# CTR reranking (ranking/live.py): how often a web process checks which ranker is live;
# a visual similarity at or above EXACT_MATCH keeps its place at the top; the weight of
# visual similarity added to the model's logit; the freshness boost (logit units) of a
# brand-new product; how often the log statistics are re-read.
RANKER_RELOAD_SECONDS = env.float("VISUALSHOP_RANKER_RELOAD_SECONDS", default=5.0)
RANKER_EXACT_MATCH_SCORE = env.float("VISUALSHOP_RANKER_EXACT_MATCH_SCORE", default=0.92)
RANKER_VISUAL_WEIGHT = env.float("VISUALSHOP_RANKER_VISUAL_WEIGHT", default=2.0)
RANKER_FRESHNESS_WEIGHT = env.float("VISUALSHOP_RANKER_FRESHNESS_WEIGHT", default=0.5)
RANKER_STATS_SECONDS = env.float("VISUALSHOP_RANKER_STATS_SECONDS", default=300.0)
