"""Configuration of MyGPT, a GPT written by hand that is also a Hugging Face model.

The fields carry GPT-2's names and defaults wherever GPT-2 has them, so a GPT-2 checkpoint maps onto MyGPT one
to one; the extra fields (grouped-query heads, other position encodings, RMSNorm, post-norm) are the knobs a
learner wants to turn to see what each design choice does. This file does not import torch: a configuration is
plain data that can be read, validated and saved anywhere.
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers import PreTrainedConfig

ACTIVATIONS = ("gelu_new", "gelu", "relu", "relu2")
POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rope", "alibi")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")


class MyGPTConfig(PreTrainedConfig):
    """Hyperparameters of a MyGPT model.

    Args:
        vocab_size: number of token ids the embedding and the LM head know (GPT-2: 50257).
        n_positions: longest sequence the model is built for; a hard limit for the table-based position
            encodings (``learned``, ``sinusoidal``), the training context for ``rope`` and ``alibi``.
        n_embd: width of the residual stream (C).
        n_layer: number of transformer blocks.
        n_head: number of query heads; ``n_embd`` must be divisible by it (head size hs = n_embd / n_head).
        n_kv_head: number of key/value heads (grouped-query attention, Ainslie et al. 2023). ``None`` means
            ``n_head`` (classic multi-head attention); 1 is multi-query attention.
        n_inner: hidden width of the MLP; ``None`` means 4 * n_embd as in GPT-2.
        activation_function: ``gelu_new`` (GPT-2's tanh approximation), ``gelu`` (exact), ``relu`` or ``relu2``
            (squared ReLU, So et al. 2021 "Primer"; GPT-2's code runs it too, through transformers' ``ACT2FN``).
        position_embedding: ``learned`` (GPT-2), ``sinusoidal`` (Vaswani et al. 2017), ``rope`` (rotary,
            Su et al. 2021) or ``alibi`` (linear biases, Press et al. 2022).
        norm: ``layernorm`` (GPT-2) or ``rmsnorm`` (Zhang & Sennrich 2019, as in LLaMA).
        norm_position: ``pre`` (GPT-2: normalise the input of each sub-layer) or ``post`` (original Transformer:
            normalise after adding the residual).
        bias: whether the linear layers and the norms have biases (GPT-2: True).
        embd_pdrop: dropout on the summed token + position embeddings.
        attn_pdrop: dropout on the attention weights.
        resid_pdrop: dropout on each sub-layer's output before it joins the residual stream.
        layer_norm_epsilon: epsilon of the norms.
        initializer_range: standard deviation of the normal initialisation (GPT-2: 0.02).
        rope_theta: base of the rotary frequencies (only used with ``rope``).
        tie_word_embeddings: share the LM head's weight with the token embedding (GPT-2: True).
        use_cache: return a KV cache from forward so that generation reuses past keys and values.
        bos_token_id, eos_token_id, pad_token_id: special token ids (GPT-2: 50256 for bos and eos).
    """

    model_type = "mygpt"
    keys_to_ignore_at_inference = ["cache"]
    # HF's generic names, so code written for any causal LM (Trainer, generate, pipelines) finds the sizes.
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "max_position_embeddings": "n_positions",
        "intermediate_size": "n_inner",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        n_kv_head: int | None = None,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        position_embedding: str = "learned",
        norm: str = "layernorm",
        norm_position: str = "pre",
        bias: bool = True,
        embd_pdrop: float = 0.1,
        attn_pdrop: float = 0.1,
        resid_pdrop: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        rope_theta: float = 10000.0,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        bos_token_id: int | None = 50256,
        eos_token_id: int | None = 50256,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        # Resolve the "same as GPT-2" defaults now, so a saved config.json states the real sizes.
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.n_inner = 4 * n_embd if n_inner is None else n_inner
        self.activation_function = activation_function
        self.position_embedding = position_embedding
        self.norm = norm
        self.norm_position = norm_position
        self.bias = bias
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.resid_pdrop = resid_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.rope_theta = rope_theta
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self._check()
        super().__init__(**kwargs)

    def _check(self) -> None:
        """Raise ``ValueError`` naming the field, its value and what would be valid."""
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_kv_head", "n_inner"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MyGPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"MyGPTConfig.n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                f"(each head gets n_embd / n_head channels)"
            )
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(
                f"MyGPTConfig.n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head} "
                f"(each key/value head serves a whole group of query heads); valid n_kv_head values: "
                f"{[d for d in range(1, self.n_head + 1) if self.n_head % d == 0]}"
            )
        choices = {
            "activation_function": ACTIVATIONS,
            "position_embedding": POSITION_EMBEDDINGS,
            "norm": NORMS,
            "norm_position": NORM_POSITIONS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"MyGPTConfig.{name}={getattr(self, name)!r} is not one of {list(valid)}")
        if self.position_embedding == "rope" and (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(
                f"MyGPTConfig.position_embedding='rope' rotates channel pairs, so the head size "
                f"n_embd / n_head = {self.n_embd // self.n_head} must be even"
            )
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"MyGPTConfig.{name}={value!r} must be a probability in [0, 1)")
        for name in ("layer_norm_epsilon", "initializer_range", "rope_theta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"MyGPTConfig.{name}={value!r} must be a positive number")

    @property
    def head_dim(self) -> int:
        """Channels per attention head (hs)."""
        return self.n_embd // self.n_head

    @property
    def is_gpt2_compatible(self) -> bool:
        """True when the architecture is exactly GPT-2's, so weights can move between the two."""
        return not self.gpt2_incompatibilities()

    def gpt2_incompatibilities(self) -> list[str]:
        """The settings that GPT-2's architecture does not have (empty when the two are the same).

        Every field that ``GPT2Config`` lacks must keep MyGPT's default, which is GPT-2's own choice (a new field
        added to ``__init__`` is covered without an edit here); ``n_kv_head`` must equal ``n_head``.
        """
        defaults = _init_defaults(type(self))
        problems = []
        for name in sorted(set(defaults) - _gpt2_shared_fields(type(self)) - _NOT_IN_GPT2_CHECK):
            gpt2_value = self.n_head if name == "n_kv_head" else defaults[name]
            if getattr(self, name) != gpt2_value:
                problems.append(f"{name}={getattr(self, name)!r} (GPT-2 has {gpt2_value!r})")
        if not getattr(self, "tie_word_embeddings", True):
            problems.append("tie_word_embeddings=False (GPT-2 ties the LM head to the token embedding)")
        return problems

    def to_gpt2_config(self, strict: bool = True) -> Any:
        """The ``transformers.GPT2Config`` describing the same network: every field the two classes share.

        Args:
            strict: with ``False``, settings GPT-2 does not have are left out, so the result is GPT-2's nearest
                network (same sizes, GPT-2's own positions and norms): the "twin" a preset that leaves GPT-2's
                architecture is compared with. ``gpt2_incompatibilities()`` lists what differs.
        Raises:
            ValueError: if ``strict`` and this configuration uses a setting GPT-2 does not have.
        """
        problems = self.gpt2_incompatibilities()
        if problems and strict:
            raise ValueError("this MyGPT configuration has no GPT-2 equivalent: " + "; ".join(problems))
        from transformers import GPT2Config

        return GPT2Config(**{name: getattr(self, name) for name in sorted(_gpt2_shared_fields(type(self)))})

    @classmethod
    def from_gpt2_config(cls, gpt2_config: Any, **overrides: Any) -> MyGPTConfig:
        """The MyGPT configuration of the same shape as a ``transformers.GPT2Config`` (every shared field)."""
        if getattr(gpt2_config, "add_cross_attention", False) or getattr(
            gpt2_config, "scale_attn_by_inverse_layer_idx", False
        ):
            raise ValueError(
                "GPT-2 configs with add_cross_attention or scale_attn_by_inverse_layer_idx have no MyGPT equivalent"
            )
        fields = {name: getattr(gpt2_config, name) for name in sorted(_gpt2_shared_fields(cls))}
        fields.update(overrides)
        return cls(**fields)


# rope_theta is read only by rotary positions, which GPT-2 lacks (position_embedding already says so).
_NOT_IN_GPT2_CHECK = frozenset({"rope_theta"})


def _init_defaults(cls: type) -> dict[str, Any]:
    """The keyword parameters of ``cls.__init__`` with their defaults (``**kwargs`` left out)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) and name != "self"
    }


def _gpt2_shared_fields(cls: type) -> set[str]:
    """The fields of ``cls`` that ``GPT2Config`` also takes: what a conversion copies, in either direction."""
    from transformers import GPT2Config

    return set(_init_defaults(cls)) & set(_init_defaults(GPT2Config))


__all__ = ["MyGPTConfig"]
