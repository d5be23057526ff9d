"""Inference backends behind one small protocol.

- ``base``: the ``Backend`` protocol, ``BackendUnavailable`` and the input/output checks.
- ``registry``: ``open_backend`` (name -> implementation; the one place runtime packages are
  imported), the precisions each backend runs and the export files each needs.
- ``torch_backend``, ``ort``, ``ncnn``, ``mnn``, ``openvino``: one backend each, importing its
  package at the top (so only ``registry`` imports them).

Every backend takes ``(1, 3, H, W)`` float32 and returns ``(P, K)`` float32 (meta.json's
layout). ``nanodet_deploy.detector.Detector`` turns any of them into image -> Detections.
"""
