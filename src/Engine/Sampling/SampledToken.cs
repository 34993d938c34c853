namespace InferenceServer.Engine.Sampling;

/// <summary>
/// The token a sampler chose. <see cref="Logprob"/> is its log-probability under the model's own
/// distribution (log_softmax of the unmodified logits), whatever penalties, temperature or
/// truncation took part in the choice: that is what the OpenAI API reports. It is computed only
/// when <see cref="SamplingParameters.Logprobs"/> asks for log-probabilities, and NaN otherwise.
/// </summary>
public readonly record struct SampledToken(int Id, float Logprob);

/// <summary>One of the most likely tokens at a step, with its log-probability under the unmodified logits.</summary>
public readonly record struct TopLogprob(int Id, float Logprob);
