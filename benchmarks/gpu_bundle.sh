#!/usr/bin/env bash
# Build .devsite/site.tar.xz: the packages the GPU machine's image lacks, unpacked from CPython 3.12
# x86-64 wheels (versions from constraints.txt) into one xz tarball that fits the 64 MiB a device call
# may carry beside the checkout. Stripped: Ray's Java jars, RLlib, Serve, LLM and dashboard front end,
# parangonar's neural checkpoints (AutomaticNoteMatcher does not use them), Transkun's weights (they
# travel apart, benchmarks/transcribe_gpu.sh) and, in a named bundle, pretty_midi's SoundFont.
# benchmarks/gpu_suite.sh unpacks it once per machine into /tmp/site. Needs pip and internet here.
#   bash benchmarks/gpu_bundle.sh                       (then carry .devsite)
#   bash benchmarks/gpu_bundle.sh OUT.tar.xz NAME...    (those packages only, into OUT.tar.xz)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.devsite/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devsite/' >> .git/info/exclude; }
OUTPUT=${1:-.devsite/site.tar.xz}
NAMES="midirenderer soxr librosa audioread pooch platformdirs decorator soundfile cffi pycparser partitura
parangonar pretty_midi mido importlib_resources lark-parser xmlschema elementpath optuna sqlalchemy alembic
mako colorlog ray jsonschema referencing rpds-py jsonschema-specifications"
[ $# -gt 1 ] && NAMES="${*:2}"
pins=$(for n in $NAMES; do grep -i -m1 "^${n//[-_]/[-_]}==" constraints.txt || { echo "no pin for $n" >&2; exit 1; }; done)
wheels=$(mktemp -d); site=$(mktemp -d)
plats=""; for n in 17 24 27 28 31 34 35 39; do plats="$plats --platform manylinux_2_${n}_x86_64"; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plats \
  --platform manylinux2014_x86_64 --platform any -d "$wheels" $pins
# unzip keeping each file's mode (zipfile -e drops it: Ray's gcs_server and raylet must stay executable)
python3 - "$site" "$wheels"/*.whl <<'PY'
import os, sys, zipfile
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = z.extract(info, sys.argv[1])
            if info.external_attr >> 16:
                os.chmod(path, (info.external_attr >> 16) & 0o777)
PY
rm -rf "$site"/ray/jars "$site"/ray/rllib "$site"/ray/serve "$site"/ray/llm "$site"/ray/dashboard/client/build \
  "$site"/parangonar/assets "$site"/transkun/pretrained/*.pt
# pretty_midi's SoundFont (TimGM6mb, 6 MB) renders the training audio: kept in the default bundle, left out
# of a named one (the transcription payload renders with its own SoundFont)
[ $# -gt 1 ] && rm -f "$site"/pretty_midi/*.sf2
mkdir -p "$(dirname "$OUTPUT")"
tar cJf "$OUTPUT" -C "$site" .
rm -rf "$wheels" "$site"
ls -la "$OUTPUT"
