using System.Diagnostics.Metrics;
using System.Net;
using InferenceServer.Server.Http;

namespace InferenceServer.Server.Tests;

/// <summary>
/// GET /metrics as Kubernetes tooling reads it: vLLM's names (with ':'), each with the served model's
/// name as model_name, next to our own; process metrics; ASP.NET Core's and Kestrel's meters.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HttpMetricsTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    private static readonly (string Name, string Type)[] VllmMetrics =
    [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:spec_decode_num_draft_tokens_total", "counter"),
        ("vllm:spec_decode_num_accepted_tokens_total", "counter"),
    ];

    [Fact]
    public async Task Metrics_have_vllms_names_types_and_model_label_and_move_with_requests()
    {
        var model = $"model_name=\"{fixture.Model.Name}\"";
        var before = await MetricsScrape.GetAsync(_client);
        foreach (var (name, type) in VllmMetrics)
            Assert.True(before.Types.TryGetValue(name, out var seen) && seen == type, $"# TYPE {name} {type} is not in:\n{before.Text}");
        Assert.DoesNotContain("vllm_", before.Text, StringComparison.Ordinal);

        // Five tokens each (ignore_eos: none ends early), so each finishes by length.
        const int Requests = 2, Tokens = 5;
        for (var i = 0; i < Requests; i++)
        {
            using var completion = await _client.PostAsync("/v1/completions",
                HttpTest.Json($"{{\"prompt\": \"def metrics_{i}(x):\", \"max_tokens\": {Tokens}, \"temperature\": 0, \"ignore_eos\": true}}"));
            Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
        }
        await fixture.AssertEngineIdleAsync();
        var after = await MetricsScrape.GetAsync(_client);

        // Other tests share this server but not at the same time: counts grow by at least these requests'.
        double Grew(string series) => after[series] - before[series];
        Assert.True(Grew($"vllm:prompt_tokens_total{{{model}}}") >= Requests * 4);
        Assert.True(Grew($"vllm:generation_tokens_total{{{model}}}") >= Requests * Tokens);
        Assert.True(Grew($"vllm:request_success_total{{finished_reason=\"length\",{model}}}") >= Requests);
        Assert.True(after.Samples.ContainsKey($"vllm:request_success_total{{finished_reason=\"stop\",{model}}}"));
        Assert.True(after.Samples.ContainsKey($"vllm:request_success_total{{finished_reason=\"abort\",{model}}}"));
        Assert.True(Grew($"vllm:time_to_first_token_seconds_count{{{model}}}") >= Requests);
        Assert.True(Grew($"vllm:inter_token_latency_seconds_count{{{model}}}") >= Requests * (Tokens - 1));
        Assert.True(Grew($"vllm:e2e_request_latency_seconds_count{{{model}}}") >= Requests);
        Assert.True(Grew($"vllm:request_queue_time_seconds_count{{{model}}}") >= Requests);
        Assert.True(Grew($"vllm:e2e_request_latency_seconds_sum{{{model}}}") > 0);
        foreach (var (name, type) in VllmMetrics.Where(m => m.Type == "histogram"))
            after.AssertBuckets(name, model);
        // Ours and vLLM's count the same thing.
        Assert.Equal(after[$"inference_tokens_generated_total{{{model}}}"], after[$"vllm:generation_tokens_total{{{model}}}"]);

        // Idle: nothing running or waiting, and no KV block used; the finished prompts' blocks stay cached, and cached is not used.
        Assert.Equal(0, after[$"vllm:num_requests_running{{{model}}}"]);
        Assert.Equal(0, after[$"vllm:num_requests_waiting{{{model}}}"]);
        Assert.Equal(0, after[$"vllm:kv_cache_usage_perc{{{model}}}"]);
        Assert.True(after[$"inference_kv_blocks_cached{{{model}}}"] > 0);

        // Process metrics, and the host's own HTTP server meters (ASP.NET Core's request duration, Kestrel's connections).
        Assert.Equal("counter", after.Types["process_cpu_seconds_total"]);
        Assert.Equal("gauge", after.Types["process_working_set_bytes"]);
        Assert.Equal("histogram", after.Types[HttpRequestDuration]);
        Assert.True(after.Samples.Where(p => p.Key.StartsWith(HttpRequestDuration + "_count{", StringComparison.Ordinal)
            && p.Key.Contains("http_route=\"/v1/completions\"", StringComparison.Ordinal)).Sum(p => p.Value) >= Requests);
        Assert.Contains(after.Types.Keys, name => name.StartsWith("microsoft_aspnetcore_server_kestrel_kestrel_", StringComparison.Ordinal));
    }

    private const string HttpRequestDuration = "microsoft_aspnetcore_hosting_http_server_request_duration";

    [Fact]
    public async Task Metrics_show_a_running_request_and_count_its_abort()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 8);
        var model = "model_name=\"slow\"";
        var idle = await MetricsScrape.GetAsync(server.Client);
        Assert.Equal(0, idle[$"vllm:num_requests_running{{{model}}}"]);
        Assert.Equal(0, idle[$"vllm:request_success_total{{finished_reason=\"abort\",{model}}}"]);

        using (var streaming = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = server.Client.BaseAddress })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = HttpTest.Json("{\"model\": \"slow\", \"prompt\": \"go\", \"max_tokens\": 400, \"stream\": true}"),
            };
            using var response = await streaming.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await server.WaitForAsync(running: 1, waiting: 0);

            var running = await MetricsScrape.GetAsync(server.Client);
            Assert.Equal(1, running[$"vllm:num_requests_running{{{model}}}"]);
            var usage = running[$"vllm:kv_cache_usage_perc{{{model}}}"];
            Assert.InRange(usage, double.Epsilon, 1);
            Assert.Equal(running[$"inference_kv_blocks_used{{{model}}}"] / server.Model.Engine.TotalKvBlocks, usage, 1e-12);
        } // the connection closes: the generation is cancelled

        await server.AssertIdleAsync();
        var after = await MetricsScrape.GetAsync(server.Client);
        Assert.Equal(1, after[$"vllm:request_success_total{{finished_reason=\"abort\",{model}}}"]);
        Assert.Equal(0, after[$"vllm:request_success_total{{finished_reason=\"length\",{model}}}"]);
        Assert.Equal(0, after[$"vllm:num_requests_running{{{model}}}"]);
        Assert.Equal(0, after[$"vllm:kv_cache_usage_perc{{{model}}}"]);
        Assert.Equal(1, after[$"vllm:request_queue_time_seconds_count{{{model}}}"]);
        Assert.Equal(1, after[$"vllm:time_to_first_token_seconds_count{{{model}}}"]);
    }

    [Fact]
    public async Task Metrics_are_not_served_on_the_grpc_port()
    {
        using var grpc = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await grpc.GetAsync(new Uri(fixture.GrpcAddress, "/metrics"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("vllm:", body, StringComparison.Ordinal);
        Assert.NotEqual("text/plain", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public void Recording_into_an_engine_instrument_allocates_nothing()
    {
        using var meter = new Meter("InferenceServer.Engine");
        var generated = meter.CreateCounter<long>("inference.tokens.generated");
        var finished = meter.CreateCounter<long>("inference.requests.finished");
        var latency = meter.CreateHistogram<double>("inference.inter_token_latency", "s");
        using var factory = new MeterFactory();
        using var export = new MetricsExport([(meter, "m")], factory);
        var length = new KeyValuePair<string, object?>("finished_reason", "length");

        void Record(int times)
        {
            for (var i = 0; i < times; i++)
            {
                generated.Add(1);
                finished.Add(1, length);
                latency.Record(0.003);
            }
        }

        Record(100);
        var before = GC.GetAllocatedBytesForCurrentThread();
        Record(10_000);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void Only_metric_names_starting_vllm_get_a_colon()
    {
        var text = "# HELP vllm_x help about vllm_y\n# TYPE vllm_x gauge\nvllm_x{model_name=\"vllm_z\"} 1\nother_vllm_x 2\n# HELP a\\nvllm_b\nvllm_"u8.ToArray();
        MetricsExport.VllmColons(text);
        Assert.Equal("# HELP vllm:x help about vllm_y\n# TYPE vllm:x gauge\nvllm:x{model_name=\"vllm_z\"} 1\nother_vllm_x 2\n# HELP a\\nvllm_b\nvllm:",
            System.Text.Encoding.UTF8.GetString(text));
    }

    private sealed class MeterFactory : IMeterFactory
    {
        public Meter Create(MeterOptions options) => new(options);

        public void Dispose()
        {
        }
    }
}
