using System.Numerics;

namespace InferenceServer.Engine.Sampling;

/// <summary>
/// Finds the best tokens of a vocabulary without sorting it. Tokens are ranked by a 64-bit key
/// (<see cref="KeyOf"/>: higher score first, then lower id), so every ranking is total and
/// deterministic. A vectorized scan first gathers the keys of the tokens close to the maximum
/// (the pool, widened while it is too small), then quickselect, by count (top-k) or by
/// probability mass (top-p), finds the best ones among them in linear time.
/// </summary>
internal ref struct TopLogitSelector
{
    // Real logits put the few likely tokens far above the bulk, so the pool starts with the
    // tokens within this many logits of the maximum, and doubles the gap while that is too few.
    private const float InitialGap = 4f;

    // Past this gap a narrower pool is not worth another pass: take the whole vocabulary.
    private const float WidestGap = 64f;

    // Ranges this small are sorted rather than partitioned further.
    private const int SmallRange = 16;

    private readonly ReadOnlySpan<float> _scores;
    private readonly float _max;
    private readonly Span<ulong> _keys;
    private int _poolCount;

    /// <param name="scores">The scores to rank.</param>
    /// <param name="max">Their maximum.</param>
    /// <param name="keys">Scratch of at least the vocabulary's length; the results are parts of it.</param>
    public TopLogitSelector(ReadOnlySpan<float> scores, float max, Span<ulong> keys)
    {
        _scores = scores;
        _max = max;
        _keys = keys[..scores.Length];
    }

    /// <summary>The keys of the <paramref name="count"/> best tokens (all of them if fewer), in no particular order.</summary>
    public Span<ulong> SelectBest(int count)
    {
        count = Math.Min(count, _scores.Length);
        for (var gap = InitialGap; _poolCount < count; gap *= 2)
            FillPool(gap);
        var pool = _keys[.._poolCount];
        SelectByCount(pool, count);
        return pool[..count];
    }

    /// <summary>
    /// The keys of the fewest best tokens whose weights reach <paramref name="requiredMass"/>
    /// (all of them if even the whole vocabulary falls short), in no particular order.
    /// </summary>
    /// <param name="weightById">Every token's unnormalized probability.</param>
    public Span<ulong> SelectNucleus(ReadOnlySpan<float> weightById, double requiredMass)
    {
        // Widen the gap until the tokens within it hold the mass (a vectorized masked sum),
        // then gather them once.
        var gap = InitialGap;
        while (gap <= WidestGap && float.IsFinite(_max - gap) && MassAtLeast(_max - gap, weightById) < requiredMass)
            gap *= 2;
        FillPool(gap);
        var pool = _keys[.._poolCount];
        return pool[..SelectByMass(pool, weightById, requiredMass)];
    }

    /// <summary>
    /// A key that sorts ascending in rank order: the score's bits made monotonic and inverted
    /// (higher score, smaller key) in the high half, the id in the low half.
    /// </summary>
    public static ulong KeyOf(float score, int id)
    {
        // Adding +0 turns -0 into +0, so that the two zeros tie and the id decides, as for equal floats.
        var bits = BitConverter.SingleToUInt32Bits(score + 0f);
        // Negative floats order backwards: flip all their bits; positive ones: only the sign bit.
        // Written without a branch, which random signs would mispredict half the time.
        var flip = (uint)((int)bits >> 31) | 0x8000_0000u;
        var ascending = bits ^ flip;
        return ((ulong)~ascending << 32) | (uint)id;
    }

    public static int IdOf(ulong key) => (int)(uint)key;

    /// <summary>Reorders <paramref name="keys"/> so that its first <paramref name="count"/> entries are its smallest.</summary>
    public static void SelectByCount(Span<ulong> keys, int count)
    {
        // Invariant: keys[..low] < keys[low..high] < keys[high..], and low <= count <= high.
        var low = 0;
        var high = keys.Length;
        var depthLeft = DepthLimit(keys.Length);
        while (high - low > 1)
        {
            if (depthLeft-- == 0)
            {
                keys[low..high].Sort();
                return;
            }
            var pivot = Partition(keys, low, high);
            if (pivot == count || pivot == count - 1)
                return;
            if (pivot > count)
                high = pivot;
            else
                low = pivot + 1;
        }
    }

    /// <summary>
    /// Weighted quickselect: reorders <paramref name="keys"/> so that its first n entries are its
    /// smallest and returns the least n whose weights sum to <paramref name="requiredMass"/> or
    /// more (all of them if the whole falls short).
    /// </summary>
    public static int SelectByMass(Span<ulong> keys, ReadOnlySpan<float> weightById, double requiredMass)
    {
        // Invariant: keys[..low] < keys[low..high] < keys[high..], the mass of keys[..low] is
        // massBefore < requiredMass, and the answer lies in (low, high].
        var low = 0;
        var high = keys.Length;
        var massBefore = 0.0;
        var depthLeft = DepthLimit(keys.Length);
        while (high - low > SmallRange && depthLeft-- > 0)
        {
            var pivot = Partition(keys, low, high);
            var lowerMass = MassOf(keys[low..(pivot + 1)], weightById);
            if (massBefore + lowerMass >= requiredMass)
            {
                high = pivot + 1;
            }
            else
            {
                massBefore += lowerMass;
                low = pivot + 1;
            }
        }
        // Finish in rank order, as the definition reads.
        var rest = keys[low..high];
        rest.Sort();
        for (var i = 0; i < rest.Length; i++)
        {
            massBefore += weightById[IdOf(rest[i])];
            if (massBefore >= requiredMass)
                return low + i + 1;
        }
        return high;
    }

    private static double MassOf(ReadOnlySpan<ulong> keys, ReadOnlySpan<float> weightById)
    {
        var mass = 0.0;
        foreach (var key in keys)
            mass += weightById[IdOf(key)];
        return mass;
    }

    // Median-of-three makes a long run of bad pivots unlikely; past this depth the range is sorted.
    private static int DepthLimit(int length) => 2 * BitOperations.Log2((uint)length + 1) + 4;

    /// <summary>
    /// Lomuto partition of keys[low..high) (distinct keys, at least two) around the median of its
    /// first, middle and last: returns p with keys[low..p) &lt; keys[p] &lt; keys(p..high). With three
    /// or more keys the pivot is neither the smallest nor the largest, so both sides shrink.
    /// </summary>
    private static int Partition(Span<ulong> keys, int low, int high)
    {
        var last = high - 1;
        var middle = low + ((high - low) >> 1);
        if (keys[middle] < keys[low])
            (keys[middle], keys[low]) = (keys[low], keys[middle]);
        if (keys[last] < keys[low])
            (keys[last], keys[low]) = (keys[low], keys[last]);
        if (keys[last] < keys[middle])
            (keys[last], keys[middle]) = (keys[middle], keys[last]);
        var pivot = keys[middle];
        (keys[middle], keys[last]) = (keys[last], keys[middle]);
        // Branch-free Lomuto: every key is swapped to the boundary, which advances only past
        // smaller ones; a compare-and-branch would mispredict on half of random keys.
        var store = low;
        for (var i = low; i < last; i++)
        {
            var key = keys[i];
            keys[i] = keys[store];
            keys[store] = key;
            store += key < pivot ? 1 : 0;
        }
        (keys[store], keys[last]) = (keys[last], keys[store]);
        return store;
    }

    /// <summary>Makes the pool the tokens within <paramref name="gap"/> of the maximum, or the whole vocabulary past <see cref="WidestGap"/>.</summary>
    private void FillPool(float gap)
    {
        var threshold = _max - gap;
        if (gap > WidestGap || !float.IsFinite(threshold))
        {
            for (var id = 0; id < _scores.Length; id++)
                _keys[id] = KeyOf(_scores[id], id);
            _poolCount = _scores.Length;
            return;
        }
        _poolCount = CollectAtLeast(threshold);
    }

    /// <summary>The total weight of the tokens whose score is at least <paramref name="threshold"/>, summed in double.</summary>
    private readonly double MassAtLeast(float threshold, ReadOnlySpan<float> weightById)
    {
        var width = Vector<float>.Count;
        var thresholdVector = new Vector<float>(threshold);
        var lowerSum = Vector<double>.Zero;
        var upperSum = Vector<double>.Zero;
        var id = 0;
        for (; id <= _scores.Length - width; id += width)
        {
            var inside = Vector.GreaterThanOrEqual(new Vector<float>(_scores.Slice(id, width)), thresholdVector);
            var weights = Vector.ConditionalSelect(inside, new Vector<float>(weightById.Slice(id, width)), Vector<float>.Zero);
            Vector.Widen(weights, out var lower, out var upper);
            lowerSum += lower;
            upperSum += upper;
        }
        var mass = Vector.Sum(lowerSum + upperSum);
        for (; id < _scores.Length; id++)
        {
            if (_scores[id] >= threshold)
                mass += weightById[id];
        }
        return mass;
    }

    /// <summary>Writes the keys of the tokens whose score is at least <paramref name="threshold"/>; returns how many.</summary>
    private readonly int CollectAtLeast(float threshold)
    {
        var count = 0;
        var width = Vector<float>.Count;
        var thresholdVector = new Vector<float>(threshold);
        var id = 0;
        // Most vectors hold no token above the threshold: one compare skips them.
        for (; id <= _scores.Length - width; id += width)
        {
            if (!Vector.GreaterThanOrEqualAny(new Vector<float>(_scores.Slice(id, width)), thresholdVector))
                continue;
            // Branch-free: always write, advance only past a token inside (count <= lane, so in bounds).
            for (var lane = id; lane < id + width; lane++)
            {
                var score = _scores[lane];
                _keys[count] = KeyOf(score, lane);
                count += score >= threshold ? 1 : 0;
            }
        }
        for (; id < _scores.Length; id++)
        {
            if (_scores[id] >= threshold)
                _keys[count++] = KeyOf(_scores[id], id);
        }
        return count;
    }
}
