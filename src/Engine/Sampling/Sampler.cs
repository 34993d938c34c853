using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace InferenceServer.Engine.Sampling;

/// <summary>
/// Chooses the tokens of one sequence. It holds what must persist from token to token: the
/// sequence's random generator and, when a penalty is on, how often each token occurred.
/// The order of operations follows vLLM and Hugging Face: repetition penalty (prompt and
/// output), frequency and presence penalties (output), then greedy arg-max, or temperature,
/// top-k, top-p, min-p and one random draw. Reported log-probabilities are those of the raw
/// logits. Top-k and top-p find their survivors by partial selection (quickselect by count or
/// by mass), never by sorting the vocabulary; the draw then walks the survivors in id order,
/// so the token depends only on the surviving set, its weights and the uniform draw.
/// Not thread-safe; <see cref="Sample"/> allocates nothing.
/// </summary>
public sealed class Sampler : IDisposable
{
    /// <summary>
    /// Probabilities come from float logits and float exponentials, so a nucleus whose mass
    /// falls short of top_p by less than this relative amount counts as reaching it (with
    /// probabilities 0.5, 0.3, ... top_p = 0.8 must keep two tokens, not three).
    /// </summary>
    public const double NucleusMassTolerance = 1e-6;

    // Up to this many survivors are drawn from by sorting their ids; more are spread over the
    // vocabulary, which costs a fixed few passes instead of a sort.
    private const int SortedDrawLimit = 4096;

    private const int InitialSeenCapacity = 64;

    private readonly SamplingParameters _parameters;
    private readonly int _vocabSize;
    private readonly Xoshiro256StarStar _random;

    // Per token id: (times generated << 1) | (1 when it occurs in the prompt and the repetition
    // penalty needs to know). Rented only when a penalty is on.
    private int[]? _occurrences;

    // The ids with a nonzero entry in _occurrences, so that applying the penalties costs the
    // number of distinct tokens seen, not the vocabulary size.
    private int[]? _seenTokens;
    private int _seenCount;
    private bool _disposed;

    /// <param name="parameters">Valid parameters (see <see cref="SamplingParameters.Validate"/>).</param>
    /// <param name="vocabSize">The number of logits of each step.</param>
    /// <param name="promptTokens">The prompt, which the repetition penalty also counts; read only here.</param>
    public Sampler(SamplingParameters parameters, int vocabSize, ReadOnlySpan<int> promptTokens)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        var problem = parameters.Validate();
        if (problem is not null)
            throw new ArgumentException(problem, nameof(parameters));
        _parameters = parameters;
        _vocabSize = vocabSize;
        _random = new Xoshiro256StarStar(parameters.Seed ?? (ulong)Random.Shared.NextInt64(long.MinValue, long.MaxValue));

        if (parameters.HasPenalties)
        {
            _occurrences = ArrayPool<int>.Shared.Rent(vocabSize);
            Array.Clear(_occurrences, 0, vocabSize); // pooled arrays come back dirty
            _seenTokens = ArrayPool<int>.Shared.Rent(Math.Min(vocabSize, Math.Max(InitialSeenCapacity, promptTokens.Length)));
            if (parameters.RepetitionPenalty != 1.0)
            {
                foreach (var token in promptTokens)
                {
                    CheckToken(token, nameof(promptTokens));
                    Record(token, generated: false);
                }
            }
        }
    }

    public SamplingParameters Parameters => _parameters;

    public int VocabSize => _vocabSize;

    /// <summary>Records a token the sequence generated, for the penalties of the following steps.</summary>
    public void Accept(int token)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckToken(token, nameof(token));
        if (_occurrences is not null)
            Record(token, generated: true);
    }

    /// <summary>
    /// Advances the generator by the one draw <see cref="Sample"/> would have taken, for a token
    /// chosen elsewhere (an arg-max the model computed), so the draws of later tokens stay the same.
    /// </summary>
    public void Skip()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _random.NextDouble();
    }

    /// <summary>Chooses the next token; reports no alternatives.</summary>
    public SampledToken Sample(ReadOnlySpan<float> logits, SamplingWorkspace workspace) =>
        Sample(logits, workspace, [], out _);

    /// <summary>
    /// Chooses the next token from one step's logits. The sequence's generator advances by
    /// exactly one draw per call, greedy or not, so a seeded sequence's tokens depend only on its
    /// seed and its own logits. The chosen token is not recorded: call <see cref="Accept"/>.
    /// </summary>
    /// <param name="logits">The model's logits, <see cref="VocabSize"/> of them (finite, or -infinity for banned tokens).</param>
    /// <param name="workspace">Scratch memory of the calling thread, at least as large as the vocabulary.</param>
    /// <param name="alternatives">Receives the most likely tokens under the raw logits, best first (ties: lower id first).</param>
    /// <param name="alternativesWritten">How many were written: the smaller of <see cref="SamplingParameters.Logprobs"/>, the span's length and the vocabulary size.</param>
    public SampledToken Sample(ReadOnlySpan<float> logits, SamplingWorkspace workspace, Span<TopLogprob> alternatives, out int alternativesWritten)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(workspace);
        if (logits.Length != _vocabSize)
            throw new ArgumentException($"expected {_vocabSize} logits, got {logits.Length}", nameof(logits));
        if (workspace.VocabSize < _vocabSize)
            throw new ArgumentException($"the workspace serves {workspace.VocabSize} tokens, the sampler needs {_vocabSize}", nameof(workspace));

        var uniform = _random.NextDouble();

        // a. log_softmax of the raw logits, for the reported log-probabilities. Only when they
        // are asked for, or when the draw can reuse the exponentials (nothing changes the logits
        // and the temperature is 1): for plain greedy decoding this pass would be most of the cost.
        var reportLogprobs = _parameters.Logprobs > 0;
        var rawMax = MaxOf(logits);
        double rawSum = 0, rawLogNormalizer = double.NaN;
        alternativesWritten = 0;
        if (reportLogprobs || (!_parameters.IsGreedy && _parameters.Temperature == 1.0 && !_parameters.HasPenalties))
        {
            var exponentials = workspace.Exponentials.AsSpan(0, _vocabSize);
            rawSum = ExponentiateAndSum(logits, rawMax, 1.0, exponentials, workspace.BlockSums);
            rawLogNormalizer = rawMax + Math.Log(rawSum);
            if (reportLogprobs)
                alternativesWritten = WriteTopLogprobs(logits, rawMax, rawLogNormalizer, workspace, alternatives);
        }

        // b, c. Penalties.
        var scores = ApplyPenalties(logits, workspace, out var penalized);

        var max = penalized ? MaxOf(scores) : rawMax;
        int id;
        if (_parameters.IsGreedy)
        {
            // d. Greedy: the first (lowest) id holding the maximum.
            id = FirstIdAtMax(scores, max);
        }
        else
        {
            // When nothing changed the logits and the temperature is 1, the raw exponentials are the ones to draw from.
            double? readyTotal = !penalized && _parameters.Temperature == 1.0 && rawSum > 0 ? rawSum : null;
            id = DrawToken(scores, max, readyTotal, workspace, uniform);
        }
        return new SampledToken(id, reportLogprobs ? (float)(logits[id] - rawLogNormalizer) : float.NaN);
    }

    /// <summary>
    /// Whether <see cref="SampleFromTop"/> can choose this sequence's tokens from the best
    /// <paramref name="topCount"/> logits of each step: nothing changes the logits (no
    /// penalties), top-k keeps no token outside them (greedy, or 0 &lt; top_k &lt;= topCount;
    /// top-p and min-p then only narrow what top-k kept), and no more alternatives are asked for.
    /// </summary>
    public bool CanSampleFromTop(int topCount) =>
        !_parameters.HasPenalties && _parameters.Logprobs <= topCount
        && (_parameters.IsGreedy || (_parameters.TopK > 0 && _parameters.TopK <= topCount));

    /// <summary>
    /// Chooses the next token from a step's best logits alone (best first, with the logsumexp of
    /// the whole row), as a paged step reduces them on the device: the choice <see cref="Sample"/>
    /// makes from the whole row, by the same steps and the same one draw, when
    /// <see cref="CanSampleFromTop"/> holds. Not recorded: call <see cref="Accept"/>.
    /// </summary>
    public SampledToken SampleFromTop(ReadOnlySpan<float> topLogits, ReadOnlySpan<long> topIds, float logSumExp, SamplingWorkspace workspace,
        Span<TopLogprob> alternatives, out int alternativesWritten)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(workspace);
        if (topIds.Length != topLogits.Length || topIds.Length == 0)
            throw new ArgumentException("expected as many top ids as top logits, at least one", nameof(topIds));
        if (!CanSampleFromTop(topIds.Length))
            throw new InvalidOperationException($"these sampling parameters need the whole logits row, not the best {topIds.Length}");

        var uniform = _random.NextDouble();
        alternativesWritten = Math.Min(Math.Min(_parameters.Logprobs, alternatives.Length), topIds.Length);
        for (var i = 0; i < alternativesWritten; i++)
            alternatives[i] = new TopLogprob((int)topIds[i], topLogits[i] - logSumExp);

        var chosen = 0;
        if (!_parameters.IsGreedy)
        {
            // e, f. Temperature over the k best (the logits are best first: the first is the maximum).
            var k = _parameters.TopK;
            var weights = workspace.CandidateWeights.AsSpan(0, k);
            TensorPrimitives.Subtract(topLogits[..k], topLogits[0], weights);
            if (_parameters.Temperature != 1.0)
                TensorPrimitives.Divide(weights, (float)_parameters.Temperature, weights);
            TensorPrimitives.Exp(weights, weights);

            // g. Top-p: the shortest best-first run reaching the mass.
            var count = k;
            if (_parameters.TopP < 1.0)
            {
                var required = RequiredMass(SumAsDouble(weights), _parameters.TopP);
                var mass = 0.0;
                for (count = 0; count < k && mass < required; count++)
                    mass += weights[count];
            }

            // h, i. Min-p, then the draw over the survivors in id order, as Sample walks them.
            var minPThreshold = _parameters.MinP > 0.0 ? (float)(_parameters.MinP * weights[0]) : 0f;
            var exponentials = workspace.Exponentials;
            var ids = workspace.CandidateIds.AsSpan(0, count);
            var survivors = 0;
            for (var i = 0; i < count; i++)
            {
                if (weights[i] < minPThreshold)
                    continue;
                var id = (int)topIds[i];
                exponentials[id] = weights[i];
                ids[survivors++] = id;
            }
            var token = DrawFromCandidates(ids[..survivors], exponentials, workspace, uniform);
            chosen = topIds[..count].IndexOf(token);
        }
        return new SampledToken((int)topIds[chosen], _parameters.Logprobs > 0 ? topLogits[chosen] - logSumExp : float.NaN);
    }

    /// <summary>Returns the rented tables to the pool; the sampler cannot be used afterwards.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (_occurrences is not null)
            ArrayPool<int>.Shared.Return(_occurrences);
        if (_seenTokens is not null)
            ArrayPool<int>.Shared.Return(_seenTokens);
        _occurrences = null;
        _seenTokens = null;
    }

    /// <summary>Steps e to i.</summary>
    /// <param name="scores">The penalized logits.</param>
    /// <param name="max">Their maximum.</param>
    /// <param name="readyTotal">When the workspace already holds the exponentials of <paramref name="scores"/> at this temperature (and their block sums), their sum.</param>
    private int DrawToken(ReadOnlySpan<float> scores, float max, double? readyTotal, SamplingWorkspace workspace, double uniform)
    {
        var parameters = _parameters;
        var exponentials = workspace.Exponentials.AsSpan(0, _vocabSize);
        var useTopK = parameters.TopK > 0 && parameters.TopK < _vocabSize;
        var useTopP = parameters.TopP < 1.0;
        var useMinP = parameters.MinP > 0.0;

        // e. Temperature. The whole vocabulary's weights are needed unless top-k narrows the
        // field first: top-p measures mass against their total, and without truncation every
        // token is a candidate.
        var total = 0.0;
        if (!useTopK)
            total = readyTotal ?? ExponentiateAndSum(scores, max, parameters.Temperature, exponentials, workspace.BlockSums);

        if (!useTopK && !useTopP)
        {
            // h. Min-p alone keeps a threshold on the weights: no ranking needed.
            if (useMinP)
            {
                ZeroBelow(exponentials, MinPThreshold(scores, max, exponentials));
                total = SumBlocks(exponentials, workspace.BlockSums);
            }
            // i.
            return DrawFromVocabulary(exponentials, workspace.BlockSums, total, uniform);
        }

        var selector = new TopLogitSelector(scores, max, workspace.Keys);
        Span<ulong> survivors;
        if (useTopK)
        {
            // f. Top-k; only the k survivors' weights are computed (into their places in exponentials).
            survivors = selector.SelectBest(parameters.TopK);
            var weights = workspace.CandidateWeights.AsSpan(0, survivors.Length);
            for (var i = 0; i < survivors.Length; i++)
                weights[i] = scores[TopLogitSelector.IdOf(survivors[i])];
            TensorPrimitives.Subtract(weights, max, weights);
            if (parameters.Temperature != 1.0)
                TensorPrimitives.Divide(weights, (float)parameters.Temperature, weights);
            TensorPrimitives.Exp(weights, weights);
            for (var i = 0; i < survivors.Length; i++)
                exponentials[TopLogitSelector.IdOf(survivors[i])] = weights[i];

            // g. Top-p over what top-k kept, renormalized.
            if (useTopP)
            {
                var required = RequiredMass(SumAsDouble(weights), parameters.TopP);
                survivors = survivors[..TopLogitSelector.SelectByMass(survivors, exponentials, required)];
            }
        }
        else
        {
            // g. Top-p over the whole vocabulary.
            survivors = selector.SelectNucleus(exponentials, RequiredMass(total, parameters.TopP));
        }

        // h. Min-p over the survivors (the best token is always among them).
        var minPThreshold = useMinP ? MinPThreshold(scores, max, exponentials) : 0f;
        var ids = workspace.CandidateIds.AsSpan(0, survivors.Length);
        var count = 0;
        foreach (var key in survivors)
        {
            var id = TopLogitSelector.IdOf(key);
            if (exponentials[id] >= minPThreshold)
                ids[count++] = id;
        }

        // i.
        return DrawFromCandidates(ids[..count], exponentials, workspace, uniform);
    }

    /// <summary>
    /// min_p times the best token's weight. That weight is exp(0) = 1 in exact arithmetic; reading
    /// it back keeps the best token above the bar whatever the rounding, even at min_p = 1.
    /// </summary>
    private float MinPThreshold(ReadOnlySpan<float> scores, float max, ReadOnlySpan<float> exponentials) =>
        (float)(_parameters.MinP * exponentials[FirstIdAtMax(scores, max)]);

    /// <summary>
    /// The mass the nucleus must reach. Probabilities come from float logits and float
    /// exponentials, so a nucleus that falls short of top_p by less than
    /// <see cref="NucleusMassTolerance"/> (relative) counts as reaching it.
    /// </summary>
    private static double RequiredMass(double total, double topP) => topP * total * (1.0 - NucleusMassTolerance);

    /// <summary>
    /// Draws one of the surviving ids with probability proportional to its weight, walking them in
    /// id order (so the result does not depend on how they were found). A few are sorted; many
    /// are spread over a vocabulary-sized table and drawn from by blocks.
    /// </summary>
    private int DrawFromCandidates(Span<int> ids, ReadOnlySpan<float> weightById, SamplingWorkspace workspace, double uniform)
    {
        if (ids.Length > SortedDrawLimit)
        {
            var spread = workspace.CandidateWeights.AsSpan(0, _vocabSize);
            spread.Clear();
            foreach (var id in ids)
                spread[id] = weightById[id];
            return DrawFromVocabulary(spread, workspace.BlockSums, SumBlocks(spread, workspace.BlockSums), uniform);
        }

        ids.Sort();
        var total = 0.0;
        foreach (var id in ids)
            total += weightById[id];
        var target = uniform * total;
        var cumulative = 0.0;
        foreach (var id in ids)
        {
            cumulative += weightById[id];
            if (cumulative > target)
                return id;
        }
        // Rounding can leave the target at the very end: take the last candidate that has weight.
        for (var i = ids.Length - 1; i > 0; i--)
        {
            if (weightById[ids[i]] > 0)
                return ids[i];
        }
        return ids[0];
    }

    /// <summary>Draws token i with probability weights[i] / total: finds the block holding the target through the block sums, then the token.</summary>
    private static int DrawFromVocabulary(ReadOnlySpan<float> weights, ReadOnlySpan<double> blockSums, double total, double uniform)
    {
        var target = uniform * total;
        var cumulative = 0.0;
        for (int block = 0, start = 0; start < weights.Length; block++, start += SamplingWorkspace.SumBlockLength)
        {
            if (cumulative + blockSums[block] <= target)
            {
                cumulative += blockSums[block];
                continue;
            }
            var end = Math.Min(start + SamplingWorkspace.SumBlockLength, weights.Length);
            for (var id = start; id < end; id++)
            {
                cumulative += weights[id];
                if (cumulative > target)
                    return id;
            }
            // The block's sum and the running sum disagreed in the last bits: go on.
        }
        for (var id = weights.Length - 1; id > 0; id--)
        {
            if (weights[id] > 0)
                return id;
        }
        return 0;
    }

    /// <summary>Writes exp((score - max) / temperature) for every token; returns their sum (and leaves each block's in <paramref name="blockSums"/>).</summary>
    private static double ExponentiateAndSum(ReadOnlySpan<float> scores, float max, double temperature, Span<float> exponentials, Span<double> blockSums)
    {
        TensorPrimitives.Subtract(scores, max, exponentials);
        if (temperature != 1.0)
            TensorPrimitives.Divide(exponentials, (float)temperature, exponentials);
        TensorPrimitives.Exp(exponentials, exponentials);
        return SumBlocks(exponentials, blockSums);
    }

    /// <summary>Sums each block of <see cref="SamplingWorkspace.SumBlockLength"/> weights into <paramref name="blockSums"/>; returns the total.</summary>
    private static double SumBlocks(ReadOnlySpan<float> weights, Span<double> blockSums)
    {
        var total = 0.0;
        for (int block = 0, start = 0; start < weights.Length; block++, start += SamplingWorkspace.SumBlockLength)
        {
            blockSums[block] = SumAsDouble(weights.Slice(start, Math.Min(SamplingWorkspace.SumBlockLength, weights.Length - start)));
            total += blockSums[block];
        }
        return total;
    }

    /// <summary>
    /// A vectorized sum of floats accumulated in double: a float sum of 150,000 terms keeps only
    /// five or six significant digits, enough to move a draw or a nucleus boundary.
    /// </summary>
    private static double SumAsDouble(ReadOnlySpan<float> values)
    {
        var width = Vector<float>.Count;
        var lowerSum = Vector<double>.Zero;
        var upperSum = Vector<double>.Zero;
        var i = 0;
        for (; i <= values.Length - width; i += width)
        {
            Vector.Widen(new Vector<float>(values.Slice(i, width)), out var lower, out var upper);
            lowerSum += lower;
            upperSum += upper;
        }
        var sum = Vector.Sum(lowerSum + upperSum);
        for (; i < values.Length; i++)
            sum += values[i];
        return sum;
    }

    /// <summary>
    /// The lowest id whose score is <paramref name="max"/>. Given the maximum, a vectorized
    /// search for it is several times faster than TensorPrimitives.IndexOfMax.
    /// </summary>
    /// <summary>
    /// The largest logit. With AVX-512 four 16-wide accumulators do it in about two thirds of the
    /// time TensorPrimitives takes here (it also tracks NaN, which logits never hold); greedy
    /// decoding spends most of its sampling time in this pass.
    /// </summary>
    private static float MaxOf(ReadOnlySpan<float> values)
    {
        if (!Vector512.IsHardwareAccelerated || values.Length < 64)
            return TensorPrimitives.Max(values);
        ref var start = ref MemoryMarshal.GetReference(values);
        var a = Vector512.LoadUnsafe(ref start);
        var b = Vector512.LoadUnsafe(ref start, 16);
        var c = Vector512.LoadUnsafe(ref start, 32);
        var d = Vector512.LoadUnsafe(ref start, 48);
        nuint i = 64;
        for (; i + 64 <= (nuint)values.Length; i += 64)
        {
            a = Vector512.Max(a, Vector512.LoadUnsafe(ref start, i));
            b = Vector512.Max(b, Vector512.LoadUnsafe(ref start, i + 16));
            c = Vector512.Max(c, Vector512.LoadUnsafe(ref start, i + 32));
            d = Vector512.Max(d, Vector512.LoadUnsafe(ref start, i + 48));
        }
        var max = Vector512.Max(Vector512.Max(a, b), Vector512.Max(c, d));
        var result = float.NegativeInfinity;
        for (var lane = 0; lane < Vector512<float>.Count; lane++)
            result = Math.Max(result, max[lane]);
        for (; i < (nuint)values.Length; i++)
            result = Math.Max(result, values[(int)i]);
        return result;
    }

    private static int FirstIdAtMax(ReadOnlySpan<float> scores, float max)
    {
        var width = Vector<float>.Count;
        var maxVector = new Vector<float>(max);
        var id = 0;
        while (id <= scores.Length - width && !Vector.GreaterThanOrEqualAny(new Vector<float>(scores.Slice(id, width)), maxVector))
            id += width;
        for (; id < scores.Length; id++)
        {
            if (scores[id] >= max)
                return id;
        }
        return TensorPrimitives.IndexOfMax(scores); // only when the maximum is NaN
    }

    /// <summary>Sets every value below <paramref name="threshold"/> to zero.</summary>
    private static void ZeroBelow(Span<float> values, float threshold)
    {
        var width = Vector<float>.Count;
        var thresholdVector = new Vector<float>(threshold);
        var i = 0;
        for (; i <= values.Length - width; i += width)
        {
            var chunk = values.Slice(i, width);
            var vector = new Vector<float>(chunk);
            Vector.ConditionalSelect(Vector.GreaterThanOrEqual(vector, thresholdVector), vector, Vector<float>.Zero).CopyTo(chunk);
        }
        for (; i < values.Length; i++)
        {
            if (values[i] < threshold)
                values[i] = 0;
        }
    }

    private int WriteTopLogprobs(ReadOnlySpan<float> logits, float rawMax, double rawLogNormalizer, SamplingWorkspace workspace, Span<TopLogprob> alternatives)
    {
        var count = Math.Min(Math.Min(_parameters.Logprobs, alternatives.Length), _vocabSize);
        if (count == 0)
            return 0;
        var selector = new TopLogitSelector(logits, rawMax, workspace.Keys);
        var best = selector.SelectBest(count);
        best.Sort();
        for (var i = 0; i < count; i++)
        {
            var id = TopLogitSelector.IdOf(best[i]);
            alternatives[i] = new TopLogprob(id, (float)(logits[id] - rawLogNormalizer));
        }
        return count;
    }

    /// <summary>
    /// Copies the logits and applies (b) the repetition penalty to every token seen in the prompt
    /// or the output, then (c) the frequency and presence penalties to every generated token.
    /// Returns the raw logits untouched when there is nothing to penalize.
    /// </summary>
    private ReadOnlySpan<float> ApplyPenalties(ReadOnlySpan<float> logits, SamplingWorkspace workspace, out bool penalized)
    {
        penalized = _seenCount > 0;
        if (!penalized)
            return logits;
        var occurrences = _occurrences!;
        var repetition = _parameters.RepetitionPenalty;
        var frequency = _parameters.FrequencyPenalty;
        var presence = _parameters.PresencePenalty;
        var scores = workspace.PenalizedLogits.AsSpan(0, _vocabSize);
        logits.CopyTo(scores);
        foreach (var id in _seenTokens.AsSpan(0, _seenCount))
        {
            double score = scores[id];
            if (repetition != 1.0)
                score = score > 0 ? score / repetition : score * repetition;
            var timesGenerated = occurrences[id] >> 1;
            if (timesGenerated > 0)
                score -= frequency * timesGenerated + presence;
            scores[id] = (float)score;
        }
        return scores;
    }

    private void Record(int token, bool generated)
    {
        ref var entry = ref _occurrences![token];
        if (entry == 0)
        {
            if (_seenCount == _seenTokens!.Length)
            {
                var larger = ArrayPool<int>.Shared.Rent(Math.Min(_vocabSize, _seenCount * 2));
                _seenTokens.AsSpan(0, _seenCount).CopyTo(larger);
                ArrayPool<int>.Shared.Return(_seenTokens);
                _seenTokens = larger;
            }
            _seenTokens[_seenCount++] = token;
        }
        entry = generated ? entry + 2 : entry | 1;
    }

    private void CheckToken(int token, string parameterName)
    {
        if ((uint)token >= (uint)_vocabSize)
            throw new ArgumentOutOfRangeException(parameterName, token, $"token ids must be in [0, {_vocabSize})");
    }
}
