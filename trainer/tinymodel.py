"""Small real models built on this machine: a trained BPE tokenizer and a randomly initialised
decoder of the same architecture family as the roadmap's base models.

Nothing is downloaded. Tests, the demo and the CPU benchmarks use these so they exercise the
exact code paths a 7B model takes (PEFT target modules, bitsandbytes quantisation, generation,
safetensors layout), only smaller. ``family`` follows the roadmap's base-model table:
mistral (Mistral-7B, BioMistral-7B), llama (Llama 3; Meditron is Llama 2), gemma (Gemma).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from healthnav.contracts.prompts import ASSESSMENT_INSTRUCTION, RESPONSE_MARKER, SYSTEM_PREAMBLE

Family = Literal["mistral", "llama", "gemma"]
FAMILIES: tuple[Family, ...] = ("mistral", "llama", "gemma")

_SEED_CORPUS = [
    SYSTEM_PREAMBLE,
    ASSESSMENT_INSTRUCTION,
    RESPONSE_MARKER,
    "### Instruction:\n### Input:\nRisk level: self-care routine urgent emergency",
    "Assessment:\nRecommendations:",
    "A. B. C. D. Answer: The correct answer is Explanation: yes no maybe",
    "Patient presents with fever, cough, headache, chest pain, shortness of breath, nausea and fatigue.",
    "Take paracetamol 500 mg every 6 hours. Seek emergency care if symptoms worsen. Call 911.",
    "Hypertension, diabetes mellitus, asthma, myocardial infarction, stroke, sepsis, anaphylaxis.",
]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2048):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on ``corpus`` (plus the prompt template's own text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_SEED_CORPUS, *corpus], trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def build_config(
    family: Family, vocab_size: int, hidden_size: int = 64, layers: int = 2, max_positions: int = 4096
):
    """A transformers config of the given family, scaled down (GQA kept: 4 query heads, 2 kv)."""
    from transformers import GemmaConfig, LlamaConfig, MistralConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "gemma":
        return GemmaConfig(**{**common, "tie_word_embeddings": True}, head_dim=hidden_size // 4)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def create_tiny_model(
    out_dir: str | Path,
    family: Family = "mistral",
    corpus: Iterable[str] = (),
    *,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a Hugging Face model directory (safetensors + tokenizer) and return its path."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    config = build_config(family, vocab_size=len(tokenizer), hidden_size=hidden_size, layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def pretrain_tiny_model(
    model_dir: str | Path,
    texts: Iterable[str],
    *,
    steps: int = 150,
    seq_len: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
) -> float:
    """Briefly train every weight of a tiny model on plain text, in place; returns the last loss.

    A randomly initialised "base model" makes a fine-tune look better than it is (anything beats
    noise). A few hundred steps of language modelling on general medical text give the demo a
    base that has seen the vocabulary but not the assessment format the fine-tune teaches.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids: list[int] = []
    for text in texts:
        ids.extend([*tokenizer(text)["input_ids"], tokenizer.eos_token_id])
    if len(ids) < seq_len + 1:
        raise ValueError("not enough text to pretrain on")
    stream = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq_len - 1, (8,), generator=generator)
        batch = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
    model.save_pretrained(model_dir, safe_serialization=True)
    return loss_value


def create_random_adapter(
    base: Path,
    out: Path,
    *,
    seed: int,
    rank: int = 8,
    scale: float = 0.5,
    only_b: bool = False,
) -> Path:
    """A LoRA adapter on q/k/v/o with random non-zero weights, saved as a PEFT directory.

    peft starts ``lora_B`` at zero, a no-op adapter; random weights make every generation differ
    from the base model's, which is what serving, parity and benchmark checks need to see that
    the adapter is applied. ``only_b`` keeps peft's ``lora_A`` initialisation and randomises
    ``lora_B`` only: with a small ``scale`` (e.g. 0.02) the model stays a working language model.

    Example::

        create_random_adapter(smollm2, tmp / "adapter", seed=3, rank=16, scale=0.02, only_b=True)
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=only_b,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or (not only_b and "lora_" in name):
                param.copy_(torch.randn_like(param) * scale)
    peft_model.save_pretrained(out)
    return out
