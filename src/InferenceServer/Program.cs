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

var parsed = root.Parse(args);
// serve stops on SIGTERM and Ctrl+C through its host, draining for as long as its grace period says;
// the command line's own handling would end the process two seconds after the signal.
var serving = parsed.CommandResult.Command == root || parsed.CommandResult.Command == serve;
return await parsed.InvokeAsync(serving ? new InvocationConfiguration { ProcessTerminationTimeout = null } : null);
