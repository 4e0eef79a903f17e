"""`python -m demo.mock_llm`: the mock LLM upstream, standalone (see the package docstring)."""

from demo.mock_llm.server import main

main()
