__version__ = "0.0.1"

# Lessons are imported lazily, so `import learnft` is instant and `learnft.models.load_smollm2()` just works.
_LESSONS = ('models', 'templates', 'formats', 'encode', 'packing', 'lora', 'quant', 'qlora', 'zero', 'tools', 'config', 'dist', 'checkpoint', 'trainer', 'chat', 'lab', 'cli')

def __getattr__(name):
    if name in _LESSONS:
        import importlib
        return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f"module 'learnft' has no attribute {name!r}")
