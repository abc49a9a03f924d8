"""The application layer: the `specstep` command (specstep.cli) and the OpenAI-compatible server
(specstep.serve). It sits on top of the five library packages and nothing imports it."""
