"""export_gguf (lesson 10g): a tiny Llama written as GGUF and read back by transformers -- the logits within the bounds the
lesson measures, bit for bit the model rounded as the file stores it, the chat template and the tokenizer intact, and
the wrong calls refused with messages that name what was expected."""
import json

import gguf
import pytest
import torch

from learnft.export import export_gguf, gguf_logit_diff, gguf_metadata, gguf_rounded, sample_ids, SAMPLE_CHAT
from learnft.models import tiny_smollm2

# Measured in nbs/10g_export.ipynb on six tiny models: worst f16 5.2e-4, worst q8_0 1.3e-2 of max |logit|.
MAX_REL = {'f16': 2e-3, 'q8_0': 3e-2}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "`{tied: (folder, model, tokenizer)}` for the 2-layer SmolLM2-family model, saved as a merged model would be."
    out = {}
    for tied in (True, False):
        model, tok = tiny_smollm2(tie_word_embeddings=tied)
        folder = tmp_path_factory.mktemp(f'tiny-{tied}')
        model.save_pretrained(folder); tok.save_pretrained(folder)
        out[tied] = folder, model, tok
    return out


@pytest.mark.parametrize('tied', [True, False], ids=['tied', 'untied'])
@pytest.mark.parametrize('dtype', ['f16', 'q8_0'])
def test_round_trip_logits(tiny, tmp_path, tied, dtype):
    folder, _, _ = tiny[tied]
    r = gguf_logit_diff(folder, export_gguf(folder, tmp_path/f'm-{dtype}.gguf', dtype))
    assert r['max_rel'] < MAX_REL[dtype], r
    if dtype == 'f16': assert r['greedy_agree'] == 1.0 and r['next_token_same'], r
    assert r['n_tokens'] == 32 and r['file_size'] == (tmp_path/f'm-{dtype}.gguf').stat().st_size


@pytest.mark.parametrize('dtype', ['f16', 'q8_0'])
def test_file_is_exactly_the_rounded_model(tiny, tmp_path, dtype):
    "Bit for bit: names, Q/K order, tying, hyper-parameters and encoding all right (a loose bound misses a wrong Q/K order on a random model)."
    from transformers import AutoModelForCausalLM
    folder, model, tok = tiny[False]
    path = export_gguf(folder, tmp_path/f'm-{dtype}.gguf', dtype)
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([sample_ids(tok, 32)])
    with torch.no_grad(): assert torch.equal(back(ids).logits, gguf_rounded(model, dtype)(ids).logits)
    assert not back.config.tie_word_embeddings and 'output.weight' in {t.name for t in gguf.GGUFReader(path).tensors}


def test_tied_omits_output(tiny, tmp_path):
    path = export_gguf(tiny[True][0], tmp_path/'m.gguf', 'q8_0')
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert 'output.weight' not in kinds and kinds['token_embd.weight'] == 'Q8_0' and kinds['output_norm.weight'] == 'F32'


def test_chat_template_and_tokenizer(tiny, tmp_path):
    from transformers import AutoTokenizer
    folder, _, tok = tiny[True]
    path = export_gguf(folder, tmp_path/'m.gguf')
    meta = gguf_metadata(path)
    assert meta['tokenizer.chat_template'] == tok.chat_template and meta['tokenizer.ggml.model'] == 'gpt2'
    assert meta['tokenizer.ggml.tokens'] == len(tok) and meta['llama.block_count'] == 2
    gtok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    mine, theirs = (t.apply_chat_template(SAMPLE_CHAT, tokenize=True, return_dict=True)['input_ids'] for t in (tok, gtok))
    assert mine == theirs and gtok.decode(theirs) == tok.decode(mine)


def test_bad_dtype(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"dtype='q4_k' is not supported: choose one of \('f16', 'q8_0'\)"):
        export_gguf(tiny[True][0], tmp_path/'m.gguf', 'q4_k')
    assert not list(tmp_path.iterdir())


def test_not_llama(tmp_path):
    (tmp_path/'qwen').mkdir()
    (tmp_path/'qwen'/'config.json').write_text(json.dumps({'model_type': 'qwen2'}))
    with pytest.raises(ValueError, match=r"model_type='qwen2', expected 'llama'"):
        export_gguf(tmp_path/'qwen', tmp_path/'m.gguf')
    assert not (tmp_path/'m.gguf').exists() and not list(tmp_path.glob('.tmp-*'))
