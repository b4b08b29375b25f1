"""Adapters to other libraries' interfaces, one module per library.

Each module imports its library when it is imported (never from ``import engine``) and, when the
library is absent, raises an ImportError naming the extra to install, e.g.
``engine.integrations.langchain`` needs ``pip install 'embed-engine[langchain]'``.
"""
