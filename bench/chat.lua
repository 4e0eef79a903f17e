-- wrk script of the gateway benchmark (bench/bench_gateway.py): one OpenAI chat request per call, each with its
-- own prompt from a prompt file, the same bytes for every target (direct, LiteLLM, finops).
--
-- Environment:
--   BENCH_PROMPTS   file with one prompt per line, each a JSON string literal (quotes included, ASCII-escaped)
--   BENCH_OFFSET    index of the first prompt this run uses (the caller advances it to the printed next_offset
--                   run after run, so a target never sees a prompt twice in one bench run)
--   BENCH_THREADS   wrk's -t (thread t sends prompts offset + t, offset + t + threads, ...: no two threads share one)
--   BENCH_KEY       bearer token
--   BENCH_SAME_PROMPT  send one fixed prompt (the exact-cache hit run)
--   BENCH_NATIVE    finops' native POST /chat body instead of the OpenAI one
--
-- Every answer is counted by status in the response hook; done() prints one line "BENCH_JSON {...}" with
-- wrk's summary, the latency percentiles (µs), the status counts and how many requests reused a prompt
-- (the file ran out: should be 0; the bench reports it).

local key = os.getenv("BENCH_KEY") or "none"
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local same = os.getenv("BENCH_SAME_PROMPT")
local native = os.getenv("BENCH_NATIVE")
local threads = {}
local next_tid = 0

setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

prompts = {}
statuses = {}
reused = 0
sent = 0
hi = 0

init = function(args)
  local path = os.getenv("BENCH_PROMPTS")
  if path then
    for line in io.lines(path) do
      if #line > 0 then prompts[#prompts + 1] = line end
    end
  end
  if #prompts == 0 then prompts[1] = '"What is the capital of France?"' end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

request = function()
  local text
  if same then
    text = '"What is the capital of France?"'
  else
    local index = offset + sent * nthreads + tid
    if index >= #prompts then reused = reused + 1 end
    if index + 1 > hi then hi = index + 1 end
    text = prompts[(index % #prompts) + 1]
  end
  sent = sent + 1
  if native then
    return wrk.format(nil, nil, nil, '{"model":"gpt-4o-mini","max_tokens":64,"temperature":0,"prompt":' .. text .. '}')
  end
  return wrk.format(nil, nil, nil,
    '{"model":"gpt-4o-mini","max_tokens":64,"temperature":0,"messages":[{"role":"user","content":' .. text .. '}]}')
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local counts = {}
  local total_reused, total_sent, next_offset = 0, 0, offset
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
    total_reused = total_reused + (thread:get("reused") or 0)
    total_sent = total_sent + (thread:get("sent") or 0)
    next_offset = math.max(next_offset, thread:get("hi") or 0)
  end
  local parts = {}
  for status, n in pairs(counts) do parts[#parts + 1] = string.format('"%d":%d', status, n) end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"sent":%d,"next_offset":%d,"reused":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, total_sent, next_offset, total_reused, table.concat(parts, ",")))
end
