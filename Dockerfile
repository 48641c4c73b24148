# The production image: one image for the web process, the django-q2 worker and migrations.
# Configuration comes from the environment at run time (see .env.example); nothing secret is baked in.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_ENV=production \
    GUNICORN_BIND=0.0.0.0:8000

WORKDIR /app

# The app runs as an unprivileged user that owns nothing but the media folder.
RUN groupadd --system app \
    && useradd --system --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

# Dependencies first, so code changes do not reinstall them. Every pin has a wheel: no compiler needed.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The product only: .dockerignore leaves out the stand-ins (sandbox/, whose app production settings
# do not install), the tests and the benchmarks.
COPY . .

# Static files are collected (hashed and compressed for WhiteNoise) at build time. Production
# settings refuse to load without a secret key and allowed hosts: throwaway values, for this
# command only, never stored in the image's environment.
RUN DJANGO_SECRET_KEY=collectstatic-build-only-not-a-secret-0123456789abcdefghijklmnop \
    DJANGO_ALLOWED_HOSTS=localhost \
    STRIPE_SECRET_KEY=sk_build_only STRIPE_PUBLISHABLE_KEY=pk_build_only STRIPE_WEBHOOK_SECRET=whsec_build_only \
    SENDGRID_API_KEY=SG.build_only GOOGLE_SERVICE_ACCOUNT_JSON={} \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/media \
    && chown app:app /app/media

USER app

EXPOSE 8000

# Healthy when /api/monitoring/health answers 200 (database, broker and cache all reachable).
# No curl in slim images: Python's urllib does the request. The Host header is the first of
# DJANGO_ALLOWED_HOSTS, so Django's host validation accepts the probe; the path is exempt from
# the HTTPS redirect. Any other status, or no answer, raises and exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; host = os.environ.get('DJANGO_ALLOWED_HOSTS', '').split(',')[0].strip().lstrip('*.') or 'localhost'; r = u.urlopen(u.Request('http://127.0.0.1:8000/api/monitoring/health', headers={'Host': host}), timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# The Procfile's web line, exactly (tests/test_deploy.py keeps them the same).
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.asgi:application"]
