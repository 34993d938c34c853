namespace InferenceServer.Tokenizer.Model;

/// <summary>
/// GPT-2's byte-to-character table: byte-level vocabularies spell every byte as a printable
/// character, so a token is a string of these characters. Printable Latin-1 bytes stand for
/// themselves; the other 68 bytes get the characters from U+0100 upwards, in byte order.
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToCharTable = BuildTable();
    private static readonly Dictionary<char, byte> CharToByteTable = BuildInverse();

    public static char ByteToChar(byte b) => ByteToCharTable[b];

    public static bool TryCharToByte(char c, out byte b) => CharToByteTable.TryGetValue(c, out b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    private static Dictionary<char, byte> BuildInverse()
    {
        var inverse = new Dictionary<char, byte>(256);
        for (var b = 0; b < 256; b++)
            inverse[ByteToCharTable[b]] = (byte)b;
        return inverse;
    }
}
