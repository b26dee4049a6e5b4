"""Generation: an OpenAI-compatible client that never wastes a call, and generators built on it."""

from operators.generate.cache import ResponseCache
from operators.generate.client import ChatRequest, Completion, EndpointConfig, LLMClient, Usage
from operators.generate.evol_instruct import EvolInstruct
from operators.generate.failures import Failure, FailureKind, failures_frame
from operators.generate.judge import Judge, PreferencePairs
from operators.generate.pretrain import PretrainGrid
from operators.generate.responses import Responses
from operators.generate.self_instruct import SelfInstruct

__all__ = ["ChatRequest", "Completion", "EndpointConfig", "EvolInstruct", "Failure", "FailureKind", "Judge",
           "LLMClient", "PreferencePairs", "PretrainGrid", "ResponseCache", "Responses", "SelfInstruct", "Usage",
           "failures_frame"]
