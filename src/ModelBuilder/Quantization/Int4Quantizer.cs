namespace InferenceServer.ModelBuilder.Quantization;

/// <summary>
/// Block-wise asymmetric 4-bit weight quantization in the layout of ONNX Runtime's
/// com.microsoft.MatMulNBits: for a weight W[N, K] (Hugging Face's [out, in] layout), each row n
/// is cut into blocks of <see cref="BlockSize"/> along K; a block stores 4-bit codes q with a
/// float scale s and a 4-bit zero point z, and dequantizes to (q - z) * s.
/// </summary>
public sealed class Int4Quantizer(int blockSize = 32)
{
    public int BlockSize { get; } = blockSize is >= 16 && (blockSize & (blockSize - 1)) == 0
        ? blockSize
        : throw new ArgumentOutOfRangeException(nameof(blockSize), "the block size must be a power of two, at least 16");

    /// <summary>Codes [N, blocks, BlockSize/2] (two per byte, low nibble first), scales [N * blocks], zero points [N * ceil(blocks/2)].</summary>
    public sealed record Result(byte[] Codes, float[] Scales, byte[] ZeroPoints, int N, int K, int BlocksPerRow);

    public Result Quantize(ReadOnlySpan<float> weight, int n, int k)
    {
        if (weight.Length != (long)n * k)
            throw new ArgumentException($"weight has {weight.Length} values, expected {n} x {k}");
        var blocks = (k + BlockSize - 1) / BlockSize;
        var blobSize = BlockSize / 2;
        var zeroPointBytesPerRow = (blocks + 1) / 2;
        var codes = new byte[(long)n * blocks * blobSize];
        var scales = new float[n * blocks];
        var zeroPoints = new byte[n * zeroPointBytesPerRow];

        for (var row = 0; row < n; row++)
        {
            var w = weight.Slice(row * k, k);
            for (var b = 0; b < blocks; b++)
            {
                var start = b * BlockSize;
                var end = Math.Min(start + BlockSize, k);
                // The range always includes 0 so that padding (and exact zeros) stay exact.
                float min = 0, max = 0;
                for (var i = start; i < end; i++)
                {
                    min = Math.Min(min, w[i]);
                    max = Math.Max(max, w[i]);
                }
                var scale = (max - min) / 15f;
                byte zero = 0;
                if (scale > 0)
                    zero = (byte)Math.Clamp(MathF.Round(-min / scale), 0, 15);
                else
                    scale = 1f;
                scales[row * blocks + b] = scale;
                var zpIndex = row * zeroPointBytesPerRow + b / 2;
                zeroPoints[zpIndex] |= (byte)(b % 2 == 0 ? zero : zero << 4);

                var blob = (long)(row * blocks + b) * blobSize;
                for (var i = 0; i < BlockSize; i++)
                {
                    var q = start + i < end
                        ? (byte)Math.Clamp(MathF.Round(w[start + i] / scale) + zero, 0, 15)
                        : zero;
                    codes[blob + i / 2] |= (byte)(i % 2 == 0 ? q : q << 4);
                }
            }
        }
        return new Result(codes, scales, zeroPoints, n, k, blocks);
    }

    /// <summary>The float weight a quantized matrix stands for, [N, K]; used to check the error.</summary>
    public float[] Dequantize(Result q)
    {
        var result = new float[q.N * q.K];
        var blobSize = BlockSize / 2;
        var zeroPointBytesPerRow = (q.BlocksPerRow + 1) / 2;
        for (var row = 0; row < q.N; row++)
        {
            for (var i = 0; i < q.K; i++)
            {
                var b = i / BlockSize;
                var within = i % BlockSize;
                var code = q.Codes[(long)(row * q.BlocksPerRow + b) * blobSize + within / 2];
                var value = within % 2 == 0 ? code & 0xF : code >> 4;
                var zpByte = q.ZeroPoints[row * zeroPointBytesPerRow + b / 2];
                var zero = b % 2 == 0 ? zpByte & 0xF : zpByte >> 4;
                result[row * q.K + i] = (value - zero) * q.Scales[row * q.BlocksPerRow + b];
            }
        }
        return result;
    }
}
