using System.CommandLine;
using InferenceServer.Commands;

var root = new RootCommand(
    """
    InferenceServer: serves small language models exported to ONNX, fast.

    Without a subcommand it runs 'serve'.
    """);
var serve = ServeCommand.Create();
root.Subcommands.Add(serve);
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(BuildModelCommand.Create());
root.Subcommands.Add(TokenizeCommands.CreateTokenize());
root.Subcommands.Add(TokenizeCommands.CreateDetokenize());

// 'serve' is the default: options given without a subcommand are serve's.
foreach (var option in ServeCommand.Options)
    root.Options.Add(option);
root.SetAction((parseResult, cancellationToken) => ServeCommand.RunAsync(parseResult, cancellationToken));

return await root.Parse(args).InvokeAsync();
