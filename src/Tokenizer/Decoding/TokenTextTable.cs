using System.Text;
using InferenceServer.Tokenizer.Model;

namespace InferenceServer.Tokenizer.Decoding;

/// <summary>
/// The bytes each token adds to decoded text, worked out once from the decoder chain, so a
/// stream of ids can be turned into text token by token without decoding the whole sequence
/// again. Covers the decoders of the byte-level and SentencePiece families: ByteLevel;
/// Replace, ByteFallback, Fuse, Strip (leading) and Metaspace.
/// </summary>
internal sealed class TokenTextTable
{
    private readonly byte[][] _bytes;
    private readonly byte[][]? _firstTokenBytes;

    /// <summary>How many copies of <see cref="LeadingStripChar"/> to drop from the start of the text.</summary>
    public int LeadingStrip { get; }
    public char LeadingStripChar { get; }

    /// <summary>Without a decoder the reference joins tokens with spaces.</summary>
    public bool JoinWithSpace { get; }

    /// <summary>Decoded by the ByteLevel decoder: a token's bytes never depend on its neighbours.</summary>
    public bool ByteLevel { get; }

    private TokenTextTable(byte[][] bytes, byte[][]? firstTokenBytes, int leadingStrip, char leadingStripChar, bool joinWithSpace, bool byteLevel)
    {
        ByteLevel = byteLevel;
        _bytes = bytes;
        _firstTokenBytes = firstTokenBytes;
        LeadingStrip = leadingStrip;
        LeadingStripChar = leadingStripChar;
        JoinWithSpace = joinWithSpace;
    }

    public ReadOnlySpan<byte> Bytes(int id, bool firstToken) =>
        (uint)id >= (uint)_bytes.Length ? default : (firstToken && _firstTokenBytes is not null ? _firstTokenBytes[id] : _bytes[id]);

    public static TokenTextTable Build(Tokenizer tokenizer)
    {
        var steps = new List<TokenDecoder>();
        Flatten(tokenizer.Decoder, steps);
        var byteLevel = steps.Any(s => s is ByteLevelDecoder);
        var byteFallback = steps.Any(s => s is ByteFallbackDecoder);
        var strip = steps.OfType<StripDecoder>().FirstOrDefault();
        var metaspace = steps.OfType<MetaspaceDecoder>().FirstOrDefault();

        var bytes = new byte[tokenizer.VocabSize][];
        var first = metaspace is { StripsFirstSpace: true } ? new byte[tokenizer.VocabSize][] : null;
        var buffer = new List<byte>();
        for (var id = 0; id < bytes.Length; id++)
        {
            var token = tokenizer.IdToToken(id);
            if (token is null)
            {
                bytes[id] = [];
                continue;
            }
            if (byteLevel)
            {
                buffer.Clear();
                ByteLevelDecoder.AppendBytes(token, buffer);
                bytes[id] = [.. buffer];
            }
            else if (byteFallback && ByteFallbackDecoder.TryParseByteToken(token, out var single))
            {
                bytes[id] = [single];
            }
            else
            {
                var text = token;
                foreach (var step in steps)
                {
                    if (step is ReplaceDecoder)
                        text = step.DecodeOne(text);
                    else if (step is MetaspaceDecoder m)
                        text = text.Replace(m.Replacement, ' ');
                }
                bytes[id] = Encoding.UTF8.GetBytes(text);
            }
            if (first is not null)
                first[id] = bytes[id] is [(byte)' ', .. var rest] ? rest : bytes[id];
        }
        return new TokenTextTable(bytes, first, strip?.Start ?? 0, strip?.Content ?? ' ', tokenizer.Decoder is null, byteLevel && first is null);
    }

    private static void Flatten(TokenDecoder? decoder, List<TokenDecoder> steps)
    {
        if (decoder is SequenceDecoder sequence)
        {
            foreach (var step in sequence.Steps)
                Flatten(step, steps);
        }
        else if (decoder is not null)
        {
            steps.Add(decoder);
        }
    }
}
