"""The paper's per-question one-step LLD protocol (plain torch): `run_protocol(ProtocolConfig(...))`."""

from .config import DEFAULT_LR, OPTIMIZERS, ProtocolConfig
from .runner import PROTOCOL_COLUMNS, ProtocolResult, run_protocol, save_protocol

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "PROTOCOL_COLUMNS", "ProtocolConfig", "ProtocolResult", "run_protocol",
           "save_protocol"]
