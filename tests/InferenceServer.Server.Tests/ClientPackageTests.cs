using System.Diagnostics;
using System.IO.Compression;
using System.Xml.Linq;
using InferenceServer.Tests;

namespace InferenceServer.Server.Tests;

/// <summary>
/// The client is published as a NuGet package: `dotnet pack` of src/Client (and of src/Protocol, the
/// package it depends on) gives packages with their metadata, readme and dependencies.
/// </summary>
public sealed class ClientPackageTests
{
    [Fact]
    public async Task The_client_and_its_protocol_pack_with_metadata_and_dependencies()
    {
        using var output = new TempFolder();
        await PackAsync("Client", output.Path);
        await PackAsync("Protocol", output.Path);

        var client = Nuspec(output.Combine("InferenceServer.Client.0.1.0.nupkg"), out var clientFiles);
        Assert.Equal("InferenceServer.Client", client["id"]);
        Assert.Equal(["Grpc.HealthCheck", "Grpc.Net.Client", "InferenceServer.Protocol"], Dependencies(client));
        Assert.Contains("lib/net10.0/InferenceServer.Client.dll", clientFiles);

        var protocol = Nuspec(output.Combine("InferenceServer.Protocol.0.1.0.nupkg"), out var protocolFiles);
        Assert.Equal("InferenceServer.Protocol", protocol["id"]);
        // Grpc.Tools compiles the .proto at build time only; it is no dependency.
        Assert.Equal(["Google.Protobuf", "Grpc.Core.Api"], Dependencies(protocol));
        Assert.Contains("lib/net10.0/InferenceServer.Protocol.dll", protocolFiles);
        Assert.Contains("content/Protos/inference.proto", protocolFiles);

        foreach (var (nuspec, files) in (ReadOnlySpan<(Metadata, IReadOnlyList<string>)>)[(client, clientFiles), (protocol, protocolFiles)])
        {
            Assert.Equal("0.1.0", nuspec["version"]);
            Assert.False(string.IsNullOrWhiteSpace(nuspec["description"]));
            Assert.False(string.IsNullOrWhiteSpace(nuspec["authors"]));
            Assert.Equal("MIT", nuspec["license"]);
            Assert.Equal("expression", nuspec.Named("license")!.Attribute("type")!.Value);
            Assert.Equal("README.md", nuspec["readme"]);
            Assert.Contains("README.md", files);
        }
    }

    private static async Task PackAsync(string project, string output)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = TestPaths.RepoRoot };
        foreach (var argument in (string[])["pack", Path.Combine("src", project), "--output", output, "--nologo"])
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(5));
        Assert.True(process.ExitCode == 0, $"dotnet pack src/{project} failed:\n{await stdout}\n{await stderr}");
    }

    /// <summary>The package's .nuspec metadata (indexable by element name), and the files it holds.</summary>
    private static Metadata Nuspec(string package, out IReadOnlyList<string> files)
    {
        using var zip = ZipFile.OpenRead(package);
        files = [.. zip.Entries.Select(e => e.FullName)];
        var nuspec = Assert.Single(zip.Entries, e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var stream = nuspec.Open();
        var root = XDocument.Load(stream).Root!;
        return new Metadata(root.Element(root.Name.Namespace + "metadata")!);
    }

    private static string[] Dependencies(Metadata metadata) =>
        [.. metadata.Element.Descendants(metadata.Element.Name.Namespace + "dependency").Select(d => d.Attribute("id")!.Value).Order(StringComparer.Ordinal)];

    private sealed record Metadata(XElement Element)
    {
        public string? this[string name] => Named(name)?.Value;

        public XElement? Named(string name) => Element.Element(Element.Name.Namespace + name);
    }
}
