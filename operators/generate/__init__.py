"""Generation: an OpenAI-compatible client that never wastes a call, and generators built on it."""

from operators.generate.cache import ResponseCache
from operators.generate.client import ChatRequest, Completion, EndpointConfig, LLMClient, Usage
from operators.generate.conversation import MultiTurn
from operators.generate.document_qa import DocumentQA
from operators.generate.evol_instruct import EvolInstruct
from operators.generate.failures import Failure, FailureKind, failures_frame
from operators.generate.judge import Judge, PreferencePairs
from operators.generate.magpie import Magpie
from operators.generate.persona import PersonaInstruct
from operators.generate.pretrain import PretrainGrid
from operators.generate.rephrase import Rephrase
from operators.generate.responses import Responses
from operators.generate.self_instruct import SelfInstruct
from operators.generate.ultrafeedback import UltraFeedback

__all__ = ["ChatRequest", "Completion", "DocumentQA", "EndpointConfig", "EvolInstruct", "Failure", "FailureKind",
           "Judge", "LLMClient", "Magpie", "MultiTurn", "PersonaInstruct", "PreferencePairs", "PretrainGrid",
           "Rephrase", "ResponseCache", "Responses", "SelfInstruct", "UltraFeedback", "Usage", "failures_frame"]
