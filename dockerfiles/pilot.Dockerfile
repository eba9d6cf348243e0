# The EWMS pilot image: `ewms-pilot` reads its job environment (see `ewms-pilot --help`).
# The process runner works as is; the apptainer/docker runners need those tools in the image
# or on the worker node (e.g. bind the host's apptainer).
# Only the pilot's dependencies (setup.cfg's `pilot` extra): no motor, htcondor or tornado.
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 pilot
COPY . /src
RUN pip install --no-cache-dir --no-deps /src \
    && pip install --no-cache-dir $(python /src/resources/component-requirements.py pilot) \
    && rm -rf /src

USER pilot
WORKDIR /home/pilot
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ewms-pilot"]
