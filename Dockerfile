# The service image: the API (`python -m app run --workers 0`) and the worker (`python -m worker`)
# run from it; docker-compose.yml wires them to a shared data volume.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LSTMLM_DATA_DIR=/data

WORKDIR /srv/lstm-lm
COPY pyproject.toml README.md constraints.txt ./
COPY model ./model
COPY app ./app
COPY worker ./worker
COPY client ./client
COPY migrations ./migrations
COPY alembic.ini ./
# Editable, so that `python -m app migrate` finds migrations/ beside the package.
# constraints.txt: the versions the test suite passed with.
RUN pip install -c constraints.txt -e ".[postgres,s3]"

VOLUME /data
EXPOSE 8000
CMD ["python", "-m", "app", "run", "--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
