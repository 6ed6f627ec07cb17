"""What several test modules share: small models per family, export-parity checks, the
bad-input catalogue's runner, the fake TensorRT, the bundled exports, the README's commands and
the command-line checks. Test modules import from here (and ``conftest``), never from each other.
"""
