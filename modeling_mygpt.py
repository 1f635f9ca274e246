"""MyGPT: a GPT written out by hand, registered as a Hugging Face causal language model.

Read it top to bottom; every piece is defined before it is used:

    norms -> position encodings -> attention -> MLP -> block -> MyGPTModel -> MyGPTForCausalLM

The network is GPT-2 (Radford et al., 2019) with the module names GPT-2 uses (``transformer.wte``,
``h.{i}.attn.c_attn``, ...), so GPT-2's weights map onto it one to one, plus the design choices a learner wants to
compare: grouped-query attention, sinusoidal / rotary / ALiBi positions, RMSNorm and post-norm. Everything around
the network (the KV cache, attention kernels, generation, saving, loading) is transformers' own machinery.

Shape legend used in the comments: B batch, T new tokens, S keys (past + new), C = n_embd, nh query heads,
nkv key/value heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, logging

try:  # as part of the Hub's remote code, sibling files are imported relatively
    from .configuration_mygpt import MyGPTConfig
except ImportError:  # from a source checkout or an installed wheel
    from configuration_mygpt import MyGPTConfig

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Norms


class MyGPTRMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): LayerNorm without the mean subtraction and the bias.

    ``y = x / sqrt(mean(x^2) + eps) * weight``; cheaper than LayerNorm and the choice of LLaMA and its family.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        # Statistics in float32: squares of bf16 activations lose too many bits.
        variance = x.float().pow(2).mean(-1, keepdim=True)  # (..., 1)
        x_normed = x.float() * torch.rsqrt(variance + self.eps)  # (..., C)
        return self.weight * x_normed.to(x.dtype)


def make_norm(config: MyGPTConfig) -> nn.Module:
    """The norm the configuration asks for, over the residual width C."""
    if config.norm == "rmsnorm":
        return MyGPTRMSNorm(config.n_embd, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)


# ----------------------------------------------------------------------------------------------------------------
# Position encodings. Two are added to the token embeddings (learned: GPT-2; sinusoidal: Vaswani et al., 2017),
# two act inside attention (rotary: Su et al., 2021, rotates q and k; ALiBi: Press et al., 2022, biases scores).


def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos table of "Attention Is All You Need": (n_positions, dim).

    Even channels hold sin(pos / 10000^(2i/dim)), odd channels the matching cos, so every position is a unique
    point and relative offsets are linear maps of it.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(C/2),)
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return table


class MyGPTSinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal position embeddings, looked up like ``nn.Embedding`` (nothing to learn, nothing saved)."""

    def __init__(self, n_positions: int, dim: int) -> None:
        super().__init__()
        self.n_positions, self.dim = n_positions, dim
        self.register_buffer("weight", sinusoidal_table(n_positions, dim), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids: (B, T) -> (B, T, C)."""
        return F.embedding(position_ids, self.weight)


class MyGPTRotaryEmbedding(nn.Module):
    """cos/sin of the rotary angles ``position * theta^(-2i/hs)`` for every position of the batch."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        """(hs/2,) angular frequencies, from fast (channel pair 0) to slow."""
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids: (B, T) -> cos, sin: (B, 1, T, hs), broadcast over heads."""
        # Angles in float32 even under autocast: position * frequency loses whole turns in bf16.
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :].float()  # (B, T, hs/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, hs)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90 degree turn of each channel pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, nh, T, hs) and keys (B, nkv, T, hs) by their positions' angles.

    After the rotation q_i . k_j depends on i - j only, which is what makes RoPE a relative encoding.
    """
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes (nh,): a geometric sequence starting at 2^(-8/n), as in Press et al.'s code.

    For a head count that is not a power of two, the slopes of the next lower power of two are completed with
    every other slope of the next higher one.
    """

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_head))
    slopes = power_of_two_slopes(closest)
    if closest < n_head:
        slopes += power_of_two_slopes(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class MyGPTAlibi(nn.Module):
    """Adds ALiBi's linear distance penalty ``-slope_h * (i - j)`` to an attention mask."""

    def __init__(self, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)

    def forward(self, mask: torch.Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype) -> torch.Tensor:
        """Combine a causal/padding mask (bool "may attend", additive float, or None = causal) with the biases.

        Returns an additive float mask (B or 1, nh, T, S). Queries are the last T of the S key positions, and the
        bias depends only on the distance i - j, so left padding does not change it.
        """
        device = self.slopes.device
        query_index = torch.arange(kv_len - q_len, kv_len, device=device)  # (T,)
        key_index = torch.arange(kv_len, device=device)  # (S,)
        distance = (key_index[None, :] - query_index[:, None]).to(torch.float32)  # (T, S), <= 0 where allowed
        bias = (self.slopes[:, None, None] * distance[None]).to(dtype)[None]  # (1, nh, T, S)
        blocked = torch.finfo(dtype).min
        if mask is None:
            allowed = key_index[None, :] <= query_index[:, None]  # (T, S)
            return torch.where(allowed, bias, blocked)
        if mask.dtype == torch.bool:
            return torch.where(mask, bias, blocked)
        # Additive float mask: 0 where allowed. Keep blocked entries at the minimum, so no sum overflows to -inf.
        return torch.where(mask == 0, bias, mask.to(dtype))


# ----------------------------------------------------------------------------------------------------------------
# Attention


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, nkv, S, hs) -> (B, nkv * n_rep, S, hs): each key/value head serves n_rep consecutive query heads."""
    if n_rep == 1:
        return x
    B, nkv, S, hs = x.shape
    return x[:, :, None].expand(B, nkv, n_rep, S, hs).reshape(B, nkv * n_rep, S, hs)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + mask) v, written out, returning the attention weights too.

    Args:
        query: (B, nh, T, hs); key, value: (B, nkv, S, hs).
        attention_mask: additive (B or 1, 1 or nh, T, S): 0 where a query may look, a very negative number where
            it may not (the future, padding); ALiBi's biases ride along in it. None means "attend everywhere"
            (only used for a single new token, which may see the whole past).
    Returns:
        output (B, T, nh, hs) and weights (B, nh, T, S).
    """
    key = repeat_kv(key, module.num_key_value_groups)  # (B, nh, S, hs)
    value = repeat_kv(value, module.num_key_value_groups)  # (B, nh, S, hs)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    # Softmax in float32: under fp16/bf16 the exponentials of large scores lose the small differences.
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, nh, T, S)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, nh, T, hs)
    return output.transpose(1, 2).contiguous(), weights


class MyGPTAttention(nn.Module):
    """Causal multi-head self-attention with optional grouped key/value heads.

    One linear layer ``c_attn`` makes queries, keys and values for every head at once; the heads attend in
    parallel; ``c_proj`` mixes their outputs back into the residual stream. The scores themselves are computed by
    ``eager_attention_forward`` above or, by default, by a fused kernel (PyTorch's scaled_dot_product_attention)
    chosen through transformers' attention interface: same mathematics, less memory traffic.
    """

    is_causal = True  # read by the sdpa kernel wrapper

    def __init__(self, config: MyGPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.num_key_value_groups = self.n_head // self.n_kv_head  # read by the sdpa kernel wrapper too
        self.scaling = self.head_dim**-0.5
        # Layout [q (nh*hs) | k (nkv*hs) | v (nkv*hs)]: with nkv == nh this is exactly GPT-2's c_attn.
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.bias)
        # Input columns [h*hs:(h+1)*hs] hold head h's output, which is what head ablations hook into.
        self.c_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # scaled at init, see MyGPTPreTrainedModel._init_weights
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (B, T, C) -> output (B, T, C), weights (B, nh, T, S) under eager attention, else None."""
        B, T, _ = hidden_states.shape
        q, k, v = self.c_attn(hidden_states).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1
        )
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)

        if position_embeddings is not None:  # rotary: rotate before caching, so cached keys keep their angle
            q, k = apply_rotary(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nkv, S, hs): the past keys/values and these

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        y, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attn_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # y: (B, T, nh, hs)
        y = y.reshape(B, T, self.n_head * self.head_dim)  # (B, T, nh*hs): heads side by side
        return self.resid_dropout(self.c_proj(y)), weights


# ----------------------------------------------------------------------------------------------------------------
# MLP and block


class MyGPTMLP(nn.Module):
    """Position-wise feed-forward network: expand to n_inner (4C), non-linearity, project back to C."""

    def __init__(self, config: MyGPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_inner, bias=config.bias)
        self.c_proj = nn.Linear(config.n_inner, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True  # scaled at init, see MyGPTPreTrainedModel._init_weights
        self.activation_function = config.activation_function
        self.dropout = nn.Dropout(config.resid_pdrop)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """The non-linearity. ``gelu_new`` is GPT-2's tanh approximation of GELU (Hendrycks & Gimpel, 2016):
        0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed by PyTorch's fused kernel. ``relu2`` is
        relu(x)^2 (So et al., 2021), which small models train well with."""
        if self.activation_function == "gelu_new":
            return F.gelu(x, approximate="tanh")
        if self.activation_function == "gelu":
            return F.gelu(x)
        if self.activation_function == "relu2":
            # Squared ReLU (So et al., 2021, "Primer"): sparse like ReLU, smooth at 0 for the gradient's sake.
            return F.relu(x).square()
        return F.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # via (B, T, n_inner)


class MyGPTBlock(GradientCheckpointingLayer):
    """One transformer block: attention (tokens talk to each other), then the MLP (each token thinks alone).

    Pre-norm (GPT-2): ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` -- the residual stream itself is never
    normalised, which keeps deep stacks trainable. Post-norm (Vaswani et al.): ``ln_1(x + attn(x))`` then
    ``ln_2(x + mlp(x))``.
    """

    def __init__(self, config: MyGPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.ln_1 = make_norm(config)
        self.attn = MyGPTAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = MyGPTMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (B, T, C) -> (B, T, C), and the attention weights (B, nh, T, S) or None."""
        residual = hidden_states
        if self.pre_norm:
            attn_output, weights = self.attn(
                self.ln_1(hidden_states), attention_mask, position_embeddings, cache, **kwargs
            )
            hidden_states = residual + attn_output
            residual = hidden_states
            hidden_states = residual + self.mlp(self.ln_2(hidden_states))
        else:
            attn_output, weights = self.attn(hidden_states, attention_mask, position_embeddings, cache, **kwargs)
            hidden_states = self.ln_1(residual + attn_output)
            residual = hidden_states
            hidden_states = self.ln_2(residual + self.mlp(hidden_states))
        return hidden_states, weights


# ----------------------------------------------------------------------------------------------------------------
# The Hugging Face models


class MyGPTPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the capabilities transformers needs to know about."""

    config_class = MyGPTConfig
    config: MyGPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MyGPTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False  # flash kernels take no additive bias (ALiBi); eager and sdpa are tested
    _can_compile_fullgraph = True

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's scheme: N(0, 0.02) for weights, zero biases, unit norms; and the residual projections scaled by
        1/sqrt(2 n_layer), because each block adds two of them to the residual stream and the sum's variance
        would otherwise grow with depth (Radford et al., 2019).

        ``init.*`` leaves tensors loaded from a checkpoint alone; the fixed position tables are recomputed.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, MyGPTRMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MyGPTSinusoidalEmbedding):
            init.copy_(module.weight, sinusoidal_table(module.n_positions, module.dim))
        elif isinstance(module, MyGPTRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif isinstance(module, MyGPTAlibi):
            init.copy_(module.slopes, alibi_slopes(module.n_head))


class MyGPTModel(MyGPTPreTrainedModel):
    """The transformer without a head: embeddings, the stack of blocks, the final norm."""

    def __init__(self, config: MyGPTConfig) -> None:
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe: nn.Module | None = None
        self.rotary: MyGPTRotaryEmbedding | None = None
        self.alibi: MyGPTAlibi | None = None
        if config.position_embedding == "learned":
            self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        elif config.position_embedding == "sinusoidal":
            self.wpe = MyGPTSinusoidalEmbedding(config.n_positions, config.n_embd)
        elif config.position_embedding == "rope":
            self.rotary = MyGPTRotaryEmbedding(config.head_dim, config.rope_theta)
        else:
            self.alibi = MyGPTAlibi(config.n_head)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([MyGPTBlock(config, layer_idx=i) for i in range(config.n_layer)])
        # Post-norm blocks already end on a norm; a second one would be a no-op with extra parameters.
        self.ln_f = make_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.wte = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Run the stack.

        Args:
            input_ids: (B, T) token ids, only the new ones when ``cache`` holds the past.
            attention_mask: (B, S) 1 for real tokens, 0 for padding, past included.
            position_ids: (B, T); by default counted from the mask, so left-padded rows get the same positions
                as unpadded ones.
            cache: a transformers ``Cache`` with the keys and values of earlier tokens.
            inputs_embeds: (B, T, C) instead of ``input_ids``.
        Returns:
            ``BaseModelOutputWithPast``: last_hidden_state (B, T, C) after ``ln_f``, the cache, and on request
            hidden_states (n_layer + 1 of (B, T, C), the last after ``ln_f``) and attentions (n_layer of
            (B, nh, T, S), eager attention only).
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else config.use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # recomputed blocks would write their keys into the cache twice
        if output_attentions and config._attn_implementation != "eager":
            # Fused kernels never form the weights; returning a tuple of Nones would look like an answer.
            raise ValueError(
                f"output_attentions=True needs the written-out attention, but this model runs "
                f"{config._attn_implementation!r}; load it with attn_implementation=\"eager\" or call "
                f"model.set_attn_implementation(\"eager\") first"
            )
        if not use_cache and cache is not None:
            # The blocks get no cache when use_cache is off, so its past keys must not shape the mask or the
            # positions either: the call is a plain forward over the new tokens.
            if cache.get_seq_length() > 0:
                logger.warning_once("use_cache=False: the cache passed in is ignored (its past is not attended to)")
            cache = None
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids (B, T) or inputs_embeds (B, T, C)")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        T = inputs_embeds.shape[1]

        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        past_len = cache.get_seq_length() if cache is not None else 0
        if self.wpe is not None and past_len + T > config.n_positions:
            raise ValueError(
                f"sequence of {past_len + T} tokens (past {past_len} + new {T}) is longer than n_positions="
                f"{config.n_positions}, the size of the {config.position_embedding} position table; "
                f"truncate the input to at most {config.n_positions} tokens"
            )
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Count real tokens only, so padding does not shift the positions of the text after it.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]  # (B, T)
            else:
                position_ids = torch.arange(past_len, past_len + T, device=inputs_embeds.device)[None]  # (1, T)

        hidden_states = inputs_embeds
        if self.wpe is not None:
            hidden_states = hidden_states + self.wpe(position_ids)  # (B, T, C)
        hidden_states = self.drop(hidden_states)
        position_embeddings = self.rotary(position_ids, hidden_states.dtype) if self.rotary is not None else None

        mask = create_causal_mask(
            config=config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            allow_is_causal_skip=self.alibi is None,  # ALiBi always needs an explicit mask to carry its biases
        )  # None (sdpa's own causal kernel), or (B, 1, T, S)
        if self.alibi is not None:
            mask = self.alibi(mask, q_len=T, kv_len=past_len + T, dtype=hidden_states.dtype)  # (B|1, nh, T, S)

        all_hidden_states: list[torch.Tensor] = []
        all_attentions: list[torch.Tensor | None] = []
        for block in self.h:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states, weights = block(
                hidden_states,
                mask,
                position_embeddings,
                cache if use_cache else None,
                output_attentions=output_attentions,
                **kwargs,
            )
            if output_attentions:
                all_attentions.append(weights)
        hidden_states = self.ln_f(hidden_states)  # (B, T, C)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


# ----------------------------------------------------------------------------------------------------------------
# The training loss without the full logits ("fused linear cross entropy", as Liger-Kernel's and Apple's Cut Cross
# Entropy). At the default preset's shape the logits of one step are 2,048 x 16,384 floats (128 MB in float32),
# written and read several times by the plain path (matmul, upcast, log-softmax, its backward, the downcast);
# chunk by chunk they stay small, and each chunk's gradients are taken while its logits are at hand.

# Rows of logits one chunk holds: 1,024 x 16,384 float32 = 64 MB.
LOSS_CHUNK_ROWS = 1024


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross entropy of ``hidden @ weight.T`` against ``targets``, computed over chunks of rows.

    The gradient of cross entropy wrt the logits is ``softmax - onehot``, so the forward pass can compute the
    gradients wrt ``hidden`` and ``weight`` chunk by chunk while it has each chunk's logits; backward only scales
    them by the incoming gradient. Logits are computed in ``compute_dtype`` (what ``nn.Linear`` would use, e.g.
    bf16 under autocast) and their softmax in float32, as transformers' loss upcasts them.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                compute_dtype: torch.dtype, chunk_rows: int) -> torch.Tensor:
        """hidden (N, C), weight (V, C), targets (N,) -> summed loss over targets != ignore_index, float32 ()."""
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.weight_dtype = weight.dtype
        w = weight.to(compute_dtype)  # (V, C)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None  # (N, C)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None  # (V, C)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start : start + chunk_rows].to(compute_dtype)  # (n, C)
            t = targets[start : start + chunk_rows]  # (n,)
            keep = t != ignore_index  # (n,)
            t = t.masked_fill(~keep, 0)  # any valid index; these rows are masked out below
            logits = F.linear(h, w).float()  # (n, V)
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            total += ((lse - logits.gather(1, t[:, None]).squeeze(1)) * keep).sum()
            if not (need_hidden or need_weight):
                continue
            # d loss / d logits = softmax - onehot(target), zero on ignored rows; in place over the logits.
            grad_logits = logits.sub_(lse[:, None]).exp_()  # (n, V)
            grad_logits.scatter_add_(1, t[:, None], -keep[:, None].to(grad_logits.dtype))
            grad_logits = (grad_logits * keep[:, None]).to(compute_dtype)  # (n, V)
            if need_hidden:
                grad_hidden[start : start + chunk_rows] = grad_logits @ w  # (n, C)
            if need_weight:
                grad_weight += (grad_logits.T @ h).float()  # (V, C)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None,
            (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None,
            None, None, None, None,
        )


def chunked_linear_cross_entropy(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    chunk_rows: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Next-token cross entropy of ``hidden_states @ weight.T``, equal to transformers' ``ForCausalLMLoss`` on
    the full logits, without materialising them.

    Args:
        hidden_states: (B, T, C) the final hidden states.
        weight: (V, C) the LM head's weight.
        labels: (B, T) as the model's ``labels`` (shifted by one here, -100 ignored), unless ``shift_labels``
            (B, T) gives the already shifted targets.
        num_items_in_batch: when given (gradient accumulation), the loss is sum / num_items_in_batch; otherwise
            the mean over the targets that are not ``ignore_index`` -- transformers' rule.
        chunk_rows: rows of logits per chunk (default ``LOSS_CHUNK_ROWS``).
    Returns:
        the scalar loss, float32.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # (B, T): token t predicts t + 1
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # (B*T, C)
    targets = shift_labels.reshape(-1).to(hidden.device)  # (B*T,)
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"labels hold {targets.shape[0]} targets for {hidden.shape[0]} positions: give labels of "
                         f"the input's shape {tuple(hidden_states.shape[:-1])}")
    chunk_rows = chunk_rows or LOSS_CHUNK_ROWS
    device_type = hidden.device.type
    # nn.Linear under autocast computes in the autocast dtype; without autocast in the hidden states' own dtype.
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    with torch.autocast(device_type, enabled=False):
        summed = ChunkedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, compute_dtype, chunk_rows)
        if num_items_in_batch is None:
            return summed / (targets != ignore_index).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(summed.device)
        return summed / num_items_in_batch


# Weights whose layout differs between GPT-2's Conv1D (in, out) and nn.Linear (out, in).
_GPT2_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _gpt2_to_mygpt_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same names; Conv1D weights transposed to Linear; GPT-2's old causal-mask buffers dropped."""
    converted = {}
    for name, tensor in state_dict.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        converted[name] = tensor.t().contiguous() if name.endswith(_GPT2_CONV1D_SUFFIXES) else tensor
    return converted


class MyGPTForCausalLM(MyGPTPreTrainedModel, GenerationMixin):
    """MyGPT with a language-modelling head: next-token logits, the loss, and ``generate()``."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: MyGPTConfig) -> None:
        super().__init__(config)
        self.transformer = MyGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Next-token logits, and the loss when ``labels`` are given.

        Args:
            labels: (B, T) the input ids themselves, as in every HF causal LM: the shift by one happens inside,
                and positions labelled -100 do not count. ``num_items_in_batch`` (a keyword the Trainer passes
                under gradient accumulation) makes the loss sum / num_items_in_batch instead of the mean.
            logits_to_keep: compute logits for the last ``logits_to_keep`` positions only (0 = all); generation
                needs just the last one, which saves a (B, T, V) matmul per step.
            skip_logits: compute the loss chunk by chunk (``chunked_linear_cross_entropy``, ``LOSS_CHUNK_ROWS``
                rows at a time) without the full (B, T, V) logits, and return ``logits=None``. Default (None):
                when training with labels -- the same loss and gradients, faster and in less memory. False
                always returns logits; True needs labels. (The name transformers' Liger integration uses.)
            Other arguments: see ``MyGPTModel.forward``.
        Returns:
            ``CausalLMOutputWithPast`` with loss (scalar), logits (B, T', V) or None (see ``skip_logits``), cache,
            hidden_states, attentions.
        """
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True computes only the loss and needs labels; give labels, or leave "
                             "skip_logits unset to get logits")
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, C)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        loss = logits = None
        if skip_logits:
            loss = chunked_linear_cross_entropy(hidden_states, self.lm_head.weight, labels, **kwargs)
        else:
            logits = self.lm_head(hidden_states)  # (B, T', V)
            if labels is not None:
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def generate(self, *args: Any, strategy: str | None = None, **kwargs: Any) -> Any:
        """``GenerationMixin.generate`` with one more argument: ``strategy``.

        ``strategy="top_p", top_p=0.9, temperature=0.8`` (or any name of ``generation_mygpt.STRATEGIES`` with its
        knobs) decodes with this project's hand-written samplers instead of transformers' built-in warpers.
        Without ``strategy`` this is exactly transformers' ``generate``.
        """
        if strategy is not None:
            try:
                from .generation_mygpt import strategy_generate_kwargs
            except ImportError:
                from generation_mygpt import strategy_generate_kwargs
            kwargs = strategy_generate_kwargs(strategy, kwargs)
        return super().generate(*args, **kwargs)

    @classmethod
    def from_gpt2(cls, source: Any, config_overrides: dict[str, Any] | None = None,
                  **from_pretrained_kwargs: Any) -> MyGPTForCausalLM:
        """A MyGPT with GPT-2's weights: same logits, same generations.

        Args:
            source: a ``GPT2LMHeadModel``, a local folder holding one, or a Hub id such as ``"gpt2"`` (needs the
                Hub, or a local HF cache of it).
            config_overrides: fields of the MyGPT configuration to set otherwise than GPT-2's (e.g. dropout
                for fine-tuning); the shape comes from GPT-2.
        """
        from transformers import GPT2LMHeadModel

        if isinstance(source, GPT2LMHeadModel):
            gpt2 = source
        elif isinstance(source, (str, os.PathLike)):
            try:
                gpt2 = GPT2LMHeadModel.from_pretrained(source, **from_pretrained_kwargs)
            except OSError as error:
                where = "the local folder" if os.path.isdir(source) else "the Hugging Face Hub (is it reachable?)"
                raise ValueError(f"could not load a GPT-2 model from {source!r} in {where}: {error}") from error
        else:
            raise TypeError(f"from_gpt2 takes a GPT2LMHeadModel, a folder or a Hub id, not {type(source).__name__}")

        config = MyGPTConfig.from_gpt2_config(gpt2.config, **(config_overrides or {}))
        model = cls(config).to(dtype=gpt2.dtype, device=gpt2.device)
        model.load_state_dict(_gpt2_to_mygpt_state_dict(gpt2.state_dict()), strict=True)
        model.set_attn_implementation(gpt2.config._attn_implementation)
        return model.train(gpt2.training)

    def to_gpt2(self) -> Any:
        """The same network as a ``transformers.GPT2LMHeadModel`` (ValueError if it has no GPT-2 equivalent)."""
        from transformers import GPT2LMHeadModel

        gpt2 = GPT2LMHeadModel(self.config.to_gpt2_config()).to(dtype=self.dtype, device=self.device)
        # Conv1D <-> Linear is the same transpose in both directions.
        gpt2.load_state_dict(_gpt2_to_mygpt_state_dict(self.state_dict()), strict=True)
        gpt2.set_attn_implementation(self.config._attn_implementation)
        return gpt2.train(self.training)


# Registration: in-process for the Auto classes, and as auto_map entries so save_pretrained copies this code
# next to the weights (that is how the Hub serves the model to people who cannot import this project).
MyGPTConfig.register_for_auto_class()
MyGPTModel.register_for_auto_class("AutoModel")
MyGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
if not __name__.startswith("transformers_modules"):  # a remote-code copy must not replace the installed classes
    AutoConfig.register(MyGPTConfig.model_type, MyGPTConfig, exist_ok=True)
    AutoModel.register(MyGPTConfig, MyGPTModel, exist_ok=True)
    AutoModelForCausalLM.register(MyGPTConfig, MyGPTForCausalLM, exist_ok=True)

__all__ = ["MyGPTAttention", "MyGPTBlock", "MyGPTForCausalLM", "MyGPTModel", "MyGPTPreTrainedModel"]
