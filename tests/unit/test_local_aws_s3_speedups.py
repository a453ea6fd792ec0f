"""The stand-in's leaner multipart completion applies to the pinned moto."""

from __future__ import annotations

from moto.s3 import models

from local_aws import s3_speedups


def test_install_replaces_motos_multipart_completion():
    original = models.FakeMultipart.complete
    try:
        assert s3_speedups.install() is True
        assert models.FakeMultipart.complete is s3_speedups._complete
    finally:
        models.FakeMultipart.complete = original
