"""`turnout bench`: the serving benchmark, against any OpenAI-compatible server.

  cli.py           `turnout bench` (and `compare`): flags -> workload -> sweep -> table, JSON, plots
  options.py       the flags both commands share, and their checks
  target.py        the server under test: base URL, model, headers
  tokenizers.py    token counts: a local tokenizer directory, or the server's /tokenize
  workloads/       what is sent: random lengths, shared prefixes, conversations from a file
  load_shapes.py   closed loop at a concurrency, open loop at a rate (Poisson / gamma arrivals)
  load.py          the load generator: one level, every request timed
  request.py       one request, streamed or not, and how it failed (429s apart)
  metrics.py       the metrics as `vllm bench serve` defines them
  result_file.py   one level's JSON, with vLLM's saved-result keys
  sweep.py         every level against one server
  table.py         the terminal table;   plots.py  the PNGs
  compare.py       two servers, one after the other, alternating rounds, a ratio table;  servers.py  their
                   commands (turnout, vllm, or any command line)
  event_loop.py    uvloop where installed

`bench/serve_bench.py`, `bench/engine_bench.py` and `bench/gateway_overhead.py` drive their servers through
this package's load generator (`load.run_level`, `request.send`).
"""
