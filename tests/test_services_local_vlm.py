"""The local transformers judge on a tiny random LLaVA built offline (tokenizer, processor, model).

A random model never writes the JSON answer, so this shows the real path end to end: labelled
images expanded into image tokens by the processor, greedy generation, strict parsing, exactly one
repair request, then a judge error: never a guessed score.
"""
from __future__ import annotations

import numpy as np
import pytest

from sairlib.interfaces import X2IInput
from sairlib.services import JudgeError, make_analyzer
from sairlib.services.local_vlm import TransformersAnalyzer, to_processor_messages
from sairlib.services.prompts import assess_messages

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
            "{% else %}{{ p['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant: "
            "{% endif %}")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (AutoModelForImageTextToText, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig,
                              LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast)

    vocab = {c: i for i, c in enumerate([chr(i) for i in range(32, 127)] + ["\n"])}
    for s in ("<unk>", "<s>", "</s>", "<pad>", "<image>"):
        vocab[s] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", additional_special_tokens=["<image>"])
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 28},
                                                             crop_size={"height": 28, "width": 28}),
                          tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          chat_template=TEMPLATE, num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                       image_size=28, patch_size=14, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llava")
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def test_messages_keep_labels_next_to_their_images():
    x = X2IInput(id="a", instruction="make it blue", images=(np.zeros((8, 8, 3), np.uint8),))
    msgs = to_processor_messages(assess_messages(x, np.full((8, 8, 3), 255, np.uint8)))
    parts = msgs[1]["content"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["text", "text", "image", "text", "image", "text"]
    assert parts[1]["text"].startswith("Input image 1") and parts[3]["text"].startswith("Output image")
    assert np.asarray(parts[4]["image"]).min() == 255 and msgs[0]["content"][0]["type"] == "text"


def test_random_tiny_llava_is_a_judge_error_after_one_repair(tiny_llava):
    judge = make_analyzer({"backend": "transformers", "model": str(tiny_llava), "max_new_tokens": 12})
    assert isinstance(judge, TransformersAnalyzer) and type(judge.model).__name__ == "LlavaForConditionalGeneration"
    x = X2IInput(id="a", instruction="draw a red circle", images=(np.zeros((16, 16, 3), np.uint8),))
    with pytest.raises(JudgeError, match="not valid JSON") as e:
        judge.assess(x, np.full((16, 16, 3), 200, np.uint8))
    assert judge.usage() == {"questions": 1, "repairs": 1, "judge_errors": 1, "generations": 2}
    with pytest.raises(JudgeError) as again:
        judge.assess(x, np.full((16, 16, 3), 200, np.uint8))
    assert again.value.answer == e.value.answer  # greedy: deterministic
    judge.close()
