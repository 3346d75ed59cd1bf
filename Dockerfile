# pianolab, CPU image: the package with its audio and tracking extras, installed from constraints.txt
# (torch: the pinned CPU wheel, from the PyTorch CPU index). Runs the quickstart A/B experiment by default.
#
#   docker build -t pianolab .                        (or: podman build -t pianolab .)
#   docker run --rm -v "$PWD/runs:/app/runs" pianolab  (run folders, report and mlflow.db land in ./runs)
#   docker run --rm pianolab pianolab --help           (any other command)
#
# docs/container.md: what was checked, and why CI does not build it.
FROM python:3.11-slim

ARG EXTRAS=audio,track
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLBACKEND=Agg
WORKDIR /app

# Dependencies first, from the project's metadata and pins only, so that this layer survives source edits.
COPY pyproject.toml constraints.txt README.md ./
COPY src/pianolab/__init__.py src/pianolab/
RUN pip install --extra-index-url "$TORCH_INDEX" -c constraints.txt -e ".[$EXTRAS]"

# The source, the bundled PercePiano data and the experiments (.dockerignore leaves out runs, caches, .git).
COPY . .
RUN pianolab --version && pianolab data check > /dev/null

CMD ["pianolab", "ab", "run", "experiments/quickstart.yaml"]
