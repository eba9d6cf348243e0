# The EWMS workflow management server.
#   docker build -f dockerfiles/server.Dockerfile -t ewms-server .
#   docker run -p 8080:8080 -e EWMS_REST_HOST=0.0.0.0 -e EWMS_MONGODB_URL=mongodb://… \
#              -e EWMS_AUTH_OPENID_URL=… -e EWMS_AUTH_AUDIENCE=… ewms-server
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ewms
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY ewms_server ./ewms_server
COPY tms ./tms
COPY ewms_pilot ./ewms_pilot
COPY ewms_client ./ewms_client
COPY schema ./schema
RUN pip install --no-cache-dir . && rm -rf /src
USER ewms
ENV EWMS_REST_HOST=0.0.0.0 EWMS_REST_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/v1/health').status == 200 else 1)"
ENTRYPOINT ["ewms-server"]
