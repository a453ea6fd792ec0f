"""Errors a user can cause; each message names the record, file or setting at fault."""

from __future__ import annotations


class BedrockBatchError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(BedrockBatchError):
    """A pipeline config, prompt template or setting is wrong."""


class QuotaError(BedrockBatchError):
    """Records or files cannot be fitted into the Bedrock batch quotas."""


class StagingError(BedrockBatchError):
    """Staging the input to S3 produced something other than what was planned."""


class OutputParseError(BedrockBatchError):
    """A model output or output file does not have the expected shape."""


class JobFailedError(BedrockBatchError):
    """A Bedrock batch job ended Failed, Stopped or Expired."""


class WindowBusyError(BedrockBatchError):
    """Another live run holds part of this run's time window (its rows are in flight there)."""


class EarlierTryError(BedrockBatchError):
    """Jobs an earlier try of the same run submitted would lose their input or output to a re-stage."""
