using System.Security.Cryptography;
using System.Text;

namespace InferenceServer.Server;

/// <summary>
/// The API keys a server accepts, checked the same way on both ports: the SHA-256 of the key a call
/// carries is compared with every accepted key's in constant time, so neither the time taken nor
/// an early exit tells a caller how much of a key (or of its length) it got right.
/// </summary>
internal sealed class ApiKeys
{
    private const string Scheme = "Bearer ";
    private readonly byte[][] _hashes;

    public ApiKeys(IEnumerable<string> keys) => _hashes = [.. keys.Select(Hash)];

    /// <summary>Whether calls need a key at all.</summary>
    public bool Required => _hashes.Length > 0;

    /// <summary>Whether an Authorization header (or gRPC authorization metadata) carries an accepted key as "Bearer KEY".</summary>
    public bool Accepts(string? authorization)
    {
        if (authorization is null || !authorization.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
            return false;
        var given = Hash(authorization[Scheme.Length..].Trim());
        var ok = false;
        foreach (var hash in _hashes)
            ok |= CryptographicOperations.FixedTimeEquals(given, hash);
        return ok;
    }

    private static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));
}
