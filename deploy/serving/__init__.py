"""Serving exported models from NVIDIA Triton Inference Server: the model repository writer
(:mod:`.repository`), a local server for tests and benchmarks (:mod:`.server`), the python-backend
model that runs our own backend classes inside the server (:mod:`.python_model`) and a bounded
load generator (:mod:`.load`). The client is :class:`deploy.backends.triton.TritonBackend`."""
