using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine.Tests;

public class SamplingParametersTests
{
    [Fact]
    public void Defaults_are_valid_and_sample_at_temperature_one()
    {
        var defaults = new SamplingParameters();
        Assert.Null(defaults.Validate());
        Assert.False(defaults.IsGreedy);
        Assert.False(defaults.HasPenalties);
        Assert.Equal(1.0, defaults.Temperature);
        Assert.Equal(0, defaults.TopK);
        Assert.Equal(1.0, defaults.TopP);
        Assert.Equal(0.0, defaults.MinP);
        Assert.Equal(1.0, defaults.RepetitionPenalty);
        Assert.Null(defaults.Seed);
        Assert.Equal(0, defaults.Logprobs);
    }

    [Fact]
    public void Greedy_instance_is_valid_and_greedy()
    {
        Assert.Null(SamplingParameters.Greedy.Validate());
        Assert.True(SamplingParameters.Greedy.IsGreedy);
        Assert.Equal(0.0, SamplingParameters.Greedy.Temperature);
    }

    [Fact]
    public void Top_k_of_one_is_greedy()
    {
        Assert.True(new SamplingParameters { TopK = 1 }.IsGreedy);
        Assert.False(new SamplingParameters { TopK = 2 }.IsGreedy);
    }

    [Fact]
    public void Values_at_the_edges_of_the_ranges_are_valid()
    {
        var edges = new SamplingParameters[]
        {
            new() { Temperature = 100 },
            new() { Temperature = 0 },
            new() { TopP = 1 },
            new() { TopP = 1e-9 },
            new() { TopK = 1_000_000 },
            new() { MinP = 0 },
            new() { MinP = 1 },
            new() { RepetitionPenalty = 10 },
            new() { RepetitionPenalty = 1e-3 },
            new() { FrequencyPenalty = -2, PresencePenalty = 2 },
            new() { FrequencyPenalty = 2, PresencePenalty = -2 },
            new() { Logprobs = 20 },
            new() { Seed = ulong.MaxValue },
        };
        foreach (var parameters in edges)
            Assert.Null(parameters.Validate());
    }

    public static TheoryData<SamplingParameters, string> InvalidParameters => new()
    {
        { new() { Temperature = -0.1 }, "temperature" },
        { new() { Temperature = 100.5 }, "temperature" },
        { new() { Temperature = double.NaN }, "temperature" },
        { new() { Temperature = double.PositiveInfinity }, "temperature" },
        { new() { TopK = -1 }, "top_k" },
        { new() { TopP = 0 }, "top_p" },
        { new() { TopP = -0.5 }, "top_p" },
        { new() { TopP = 1.01 }, "top_p" },
        { new() { TopP = double.NaN }, "top_p" },
        { new() { MinP = -0.01 }, "min_p" },
        { new() { MinP = 1.5 }, "min_p" },
        { new() { MinP = double.NaN }, "min_p" },
        { new() { RepetitionPenalty = 0 }, "repetition_penalty" },
        { new() { RepetitionPenalty = -1 }, "repetition_penalty" },
        { new() { RepetitionPenalty = 10.5 }, "repetition_penalty" },
        { new() { RepetitionPenalty = double.PositiveInfinity }, "repetition_penalty" },
        { new() { FrequencyPenalty = 2.5 }, "frequency_penalty" },
        { new() { FrequencyPenalty = -2.5 }, "frequency_penalty" },
        { new() { FrequencyPenalty = double.NaN }, "frequency_penalty" },
        { new() { PresencePenalty = 2.01 }, "presence_penalty" },
        { new() { PresencePenalty = -3 }, "presence_penalty" },
        { new() { PresencePenalty = double.NegativeInfinity }, "presence_penalty" },
        { new() { Logprobs = -1 }, "logprobs" },
        { new() { Logprobs = 21 }, "logprobs" },
    };

    [Theory]
    [MemberData(nameof(InvalidParameters))]
    public void Each_invalid_value_is_reported_by_name(SamplingParameters parameters, string name)
    {
        var message = parameters.Validate();
        Assert.NotNull(message);
        Assert.StartsWith(name + " ", message, StringComparison.Ordinal);
        Assert.Contains("must", message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_message_gives_the_range_and_the_value()
    {
        Assert.Equal("top_p must be in (0, 1], got 1.5.", new SamplingParameters { TopP = 1.5 }.Validate());
        Assert.Equal("temperature must be between 0 and 100 (0 means greedy), got NaN.", new SamplingParameters { Temperature = double.NaN }.Validate());
    }

    [Fact]
    public void A_sampler_refuses_invalid_parameters()
    {
        var exception = Assert.Throws<ArgumentException>(() => new Sampler(new SamplingParameters { MinP = 2 }, 10, []));
        Assert.Contains("min_p", exception.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parameters_compare_by_value()
    {
        Assert.Equal(new SamplingParameters { TopK = 5, Seed = 3 }, new SamplingParameters { TopK = 5, Seed = 3 });
        Assert.NotEqual(new SamplingParameters { TopK = 5 }, new SamplingParameters { TopK = 6 });
    }
}
