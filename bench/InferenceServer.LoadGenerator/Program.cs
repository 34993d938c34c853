using InferenceServer.LoadGenerator.Commands;

return await LoadCommands.Create().Parse(args).InvokeAsync();
