using System.IO.Compression;
using Grpc.Core;
using Grpc.Net.Compression;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// The one message compression the gRPC port speaks besides none: gzip, as the library's own
/// provider, except that a message that is not gzip data is INTERNAL saying so, where the library
/// would answer UNKNOWN.
/// </summary>
internal sealed class GzipMessages : ICompressionProvider
{
    public string EncodingName => "gzip";

    public Stream CreateCompressionStream(Stream stream, CompressionLevel? compressionLevel) =>
        new GZipStream(stream, compressionLevel ?? CompressionLevel.Fastest, leaveOpen: true);

    public Stream CreateDecompressionStream(Stream stream) => new Checked(new GZipStream(stream, CompressionMode.Decompress));

    private sealed class Checked(Stream inner) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            try
            {
                return inner.Read(buffer);
            }
            catch (InvalidDataException e)
            {
                throw new RpcException(new Status(StatusCode.Internal, $"the message is not valid gzip data: {e.Message}"));
            }
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
