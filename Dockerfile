# syntax=docker/dockerfile:1
# ghapp's image: docker build -t ghapp:0.1.0 .

# -- build the wheel --------------------------------------------------------------------------------------
FROM python:3.12-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ghapp ./ghapp
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- run it: the wheel and its dependencies, nothing else ---------------------------------------------------
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir /wheels/*.whl
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["ghapp"]
CMD ["serve"]
