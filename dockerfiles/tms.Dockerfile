# ewms-tms: one per HTCondor access point (schedd). Configure with EWMS_TMS_* (see `ewms-tms --help`).
# Only the TMS's dependencies (setup.cfg's `tms` extra): no motor, no pika.
FROM python:3.11-slim
RUN useradd --create-home --uid 1000 tms
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir --no-deps /src \
    && pip install --no-cache-dir $(python /src/resources/component-requirements.py tms) \
    && rm -rf /src
USER tms
WORKDIR /home/tms
ENV EWMS_TMS_JOB_EVENT_LOG_DIR=/home/tms/jobs
ENTRYPOINT ["ewms-tms"]
