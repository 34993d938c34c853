using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.Tokenizers;

namespace InferenceServer.Benchmarks.TokenizerLibraries;

/// <summary>
/// Microsoft.ML.Tokenizers reads SentencePiece models only as the protobuf `tokenizer.model`, which a
/// tokenizer.json does not come with. This writes the fields its BPE reads from the tokenizer.json:
/// the pieces in id order, scored by the merge that makes them (SentencePiece's BPE merges the
/// highest-scored pair first, so score -rank keeps the file's merge order), their
/// kinds (unknown, control, byte), BPE with byte fallback, a dummy prefix and escaped white space.
/// </summary>
public static class SentencePieceModelWriter
{
    private const string Library = "Microsoft.ML.Tokenizers (SentencePiece)";

    public static MicrosoftMlLoader.Loaded Load(JsonElement root)
    {
        var model = root.GetProperty("model");
        var vocabulary = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Value.GetInt32(), p => p.Name);
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var added in root.GetProperty("added_tokens").EnumerateArray())
            special[added.GetProperty("content").GetString()!] = added.GetProperty("id").GetInt32();
        var unknown = model.GetProperty("unk_token").GetString();
        var rankOf = new Dictionary<string, int>(StringComparer.Ordinal);
        var rank = 0;
        foreach (var merge in model.GetProperty("merges").EnumerateArray())
        {
            var pair = merge.ValueKind == JsonValueKind.Array ? [merge[0].GetString()!, merge[1].GetString()!] : merge.GetString()!.Split(' ', 2);
            rankOf.TryAdd(pair[0] + pair[1], rank++);
        }

        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer, leaveOpen: true);
        for (var id = 0; id < vocabulary.Count; id++)
        {
            if (!vocabulary.TryGetValue(id, out var piece))
                return new MicrosoftMlLoader.Loaded(Library, null, $"vocabulary has no id {id}");
            var kind = piece == unknown ? 2 : special.ContainsKey(piece) ? 3 : IsByte(piece) ? 6 : 1;
            using var message = new MemoryStream();
            var inner = new CodedOutputStream(message, leaveOpen: true);
            inner.WriteTag(1, WireFormat.WireType.LengthDelimited);
            inner.WriteString(piece);
            inner.WriteTag(2, WireFormat.WireType.Fixed32);
            inner.WriteFloat(rankOf.TryGetValue(piece, out var merged) ? -merged : -rank - id);
            inner.WriteTag(3, WireFormat.WireType.Varint);
            inner.WriteEnum(kind);
            inner.Flush();
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(message.ToArray()));
        }

        using var trainer = new MemoryStream();
        var trainerOutput = new CodedOutputStream(trainer, leaveOpen: true);
        WriteVarint(trainerOutput, 3, 2); // model_type: BPE
        WriteVarint(trainerOutput, 35, 1); // byte_fallback
        WriteVarint(trainerOutput, 40, special.GetValueOrDefault(unknown ?? "", 0)); // unk_id
        WriteVarint(trainerOutput, 41, special.GetValueOrDefault("<s>", -1)); // bos_id
        WriteVarint(trainerOutput, 42, special.GetValueOrDefault("</s>", -1)); // eos_id
        WriteVarint(trainerOutput, 43, -1); // pad_id
        trainerOutput.Flush();
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(trainer.ToArray()));

        using var normalizer = new MemoryStream();
        var normalizerOutput = new CodedOutputStream(normalizer, leaveOpen: true);
        normalizerOutput.WriteTag(1, WireFormat.WireType.LengthDelimited);
        normalizerOutput.WriteString("identity");
        WriteVarint(normalizerOutput, 3, 1); // add_dummy_prefix
        WriteVarint(normalizerOutput, 4, 0); // remove_extra_whitespaces
        WriteVarint(normalizerOutput, 5, 1); // escape_whitespaces
        normalizerOutput.Flush();
        output.WriteTag(3, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(normalizer.ToArray()));
        output.Flush();

        buffer.Position = 0;
        var tokenizer = SentencePieceTokenizer.Create(buffer, false, false, special);
        return new MicrosoftMlLoader.Loaded(Library, tokenizer, "model written from tokenizer.json");
    }

    private static bool IsByte(string piece) => piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>';

    private static void WriteVarint(CodedOutputStream output, int field, int value)
    {
        output.WriteTag(field, WireFormat.WireType.Varint);
        output.WriteInt32(value);
    }
}
