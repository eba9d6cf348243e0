# The EWMS pilot image: `ewms-pilot` reads its job environment (see `ewms-pilot --help`).
# The process runner works as is; the apptainer/docker runners need those tools in the image
# or on the worker node (e.g. bind the host's apptainer).
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 pilot
WORKDIR /opt/ewms
COPY ewms_pilot/ ewms_pilot/
RUN pip install --no-cache-dir "pika>=1.3,<2"

USER pilot
ENV PYTHONPATH=/opt/ewms PYTHONUNBUFFERED=1
ENTRYPOINT ["python", "-m", "ewms_pilot"]
