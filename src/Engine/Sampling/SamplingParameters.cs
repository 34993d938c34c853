using System.Globalization;

namespace InferenceServer.Engine.Sampling;

/// <summary>
/// How one sequence picks its next token. The names and conventions are those of the OpenAI /
/// vLLM APIs, so the values in a request can be copied here one to one.
/// </summary>
public sealed record SamplingParameters
{
    /// <summary>The most alternatives a request may ask for (the OpenAI API's limit).</summary>
    public const int MaxLogprobs = 20;

    /// <summary>The highest accepted temperature; beyond it the distribution is uniform for any practical purpose.</summary>
    public const double MaxTemperature = 100.0;

    /// <summary>The highest accepted repetition penalty.</summary>
    public const double MaxRepetitionPenalty = 10.0;

    /// <summary>The bound of the frequency and presence penalties (the OpenAI API's range).</summary>
    public const double MaxAdditivePenalty = 2.0;

    /// <summary>Takes the most likely token every time.</summary>
    public static SamplingParameters Greedy { get; } = new() { Temperature = 0 };

    /// <summary>Divides the logits before the softmax; 0 means greedy.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keeps only the k most likely tokens; 0 turns it off.</summary>
    public int TopK { get; init; }

    /// <summary>Keeps the smallest set of most likely tokens whose probability reaches this mass; 1 turns it off.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Drops tokens less likely than this fraction of the most likely one; 0 turns it off.</summary>
    public double MinP { get; init; }

    /// <summary>Hugging Face / CTRL penalty on every token seen in the prompt or the output; 1 turns it off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Subtracted from a token's logit once per time it was generated.</summary>
    public double FrequencyPenalty { get; init; }

    /// <summary>Subtracted from a token's logit once if it was generated at all.</summary>
    public double PresencePenalty { get; init; }

    /// <summary>Seeds the sequence's random generator; null draws a seed at random.</summary>
    public ulong? Seed { get; init; }

    /// <summary>How many most likely alternatives to report with each token (0 to <see cref="MaxLogprobs"/>).</summary>
    public int Logprobs { get; init; }

    /// <summary>True when the choice is the arg-max and randomness plays no part.</summary>
    public bool IsGreedy => Temperature == 0 || TopK == 1;

    /// <summary>True when any of the penalties changes the logits.</summary>
    public bool HasPenalties => RepetitionPenalty != 1.0 || FrequencyPenalty != 0.0 || PresencePenalty != 0.0;

    /// <summary>Null when every value is in range, otherwise a message naming the first bad parameter and its allowed range.</summary>
    public string? Validate()
    {
        if (!double.IsFinite(Temperature) || Temperature < 0 || Temperature > MaxTemperature)
            return Describe("temperature", "must be between 0 and 100 (0 means greedy)", Temperature);
        if (TopK < 0)
            return Describe("top_k", "must be 0 (off) or a positive number of tokens", TopK);
        if (!double.IsFinite(TopP) || TopP <= 0 || TopP > 1)
            return Describe("top_p", "must be in (0, 1]", TopP);
        if (!double.IsFinite(MinP) || MinP < 0 || MinP > 1)
            return Describe("min_p", "must be in [0, 1]", MinP);
        if (!double.IsFinite(RepetitionPenalty) || RepetitionPenalty <= 0 || RepetitionPenalty > MaxRepetitionPenalty)
            return Describe("repetition_penalty", "must be greater than 0 and at most 10", RepetitionPenalty);
        if (!double.IsFinite(FrequencyPenalty) || Math.Abs(FrequencyPenalty) > MaxAdditivePenalty)
            return Describe("frequency_penalty", "must be in [-2, 2]", FrequencyPenalty);
        if (!double.IsFinite(PresencePenalty) || Math.Abs(PresencePenalty) > MaxAdditivePenalty)
            return Describe("presence_penalty", "must be in [-2, 2]", PresencePenalty);
        if (Logprobs < 0 || Logprobs > MaxLogprobs)
            return Describe("logprobs", "must be between 0 and 20", Logprobs);
        return null;
    }

    private static string Describe(string name, string rule, double value) =>
        string.Create(CultureInfo.InvariantCulture, $"{name} {rule}, got {value}.");
}
