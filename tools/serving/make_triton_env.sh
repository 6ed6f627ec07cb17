#!/usr/bin/env bash
# Make the Triton server's own environment (default .venv-triton in the checkout):
#
#   tools/serving/make_triton_env.sh [ENV_DIR]
#
# nvidia-pytriton ships tritonserver with its Python backend; the backend's stub embeds this
# environment's Python (numpy<2, onnxruntime) and imports our package from the checkout (a .pth
# file). PYTHON (default python3) is the interpreter the environment is made from: the stub
# for its version is put in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ENV_DIR=${1:-.venv-triton}

if [ ! -x "$ENV_DIR/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$ENV_DIR"
fi
"$ENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -r requirements/triton_server.txt
"$ENV_DIR/bin/python" - "$PWD" <<'PY'
import shutil
import sys
import sysconfig
from pathlib import Path

import pytriton

site = Path(sysconfig.get_paths()['purelib'])
(site / 'detdeploy_checkout.pth').write_text(sys.argv[1] + '\n')
server = Path(pytriton.__file__).parent / 'tritonserver'
version = f'{sys.version_info.major}.{sys.version_info.minor}'
stub = server / 'python_backend_stubs' / version / 'triton_python_backend_stub'
if not stub.is_file():
    sys.exit(f'nvidia-pytriton has no python-backend stub for Python {version}')
shutil.copy2(stub, server / 'backends' / 'python' / stub.name)
print(f'Triton server environment ready: {Path(sys.prefix)} (Python {version})')
PY
