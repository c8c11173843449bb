"""Which modules does `import unsloth` need that this machine lacks? Import it again and again, each time putting an empty
stand-in for the module that was missing, and print them all (then the first error that is not a missing module).

    python benchmarks/probe_unsloth_imports.py
"""
import importlib.machinery, sys, traceback, types

missing = []
for attempt in range(30):
    for name in [m for m in sys.modules if m.split('.')[0] in ('unsloth', 'unsloth_zoo')]: del sys.modules[name]
    try:
        import unsloth  # noqa: F401
        print(f'import unsloth: OK after {len(missing)} stand-ins (version {getattr(unsloth, "__version__", "?")})'); break
    except ModuleNotFoundError as e:
        if not e.name or e.name in missing: print(f'stopped: {e!r}'); traceback.print_exc(limit=-4); break
        missing.append(e.name)
        stub = types.ModuleType(e.name); stub.__spec__ = importlib.machinery.ModuleSpec(e.name, None, is_package=True); stub.__path__ = []
        sys.modules[e.name] = stub
    except BaseException as e:
        print(f'stopped on {type(e).__name__}: {str(e)[:1500]}'); traceback.print_exc(limit=-6); break
print('missing modules (in the order import unsloth asked for them):', missing)
